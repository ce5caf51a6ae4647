//! Typed errors shared by every burn-peft crate.

use thiserror::Error;

/// Everything that can go wrong while attaching, loading, merging or saving adapters.
#[derive(Debug, Error)]
pub enum PeftError {
    /// A rank of zero was requested.
    #[error("rank must be at least 1, got 0 for `{path}`")]
    ZeroRank {
        /// Module path the adapter was meant for.
        path: String,
    },
    /// The rank exceeds what the layer's dimensions allow.
    #[error("rank {rank} is larger than min(d_in, d_out) = {max} for `{path}`")]
    RankTooLarge {
        /// Module path of the layer.
        path: String,
        /// Requested rank.
        rank: usize,
        /// Largest rank the layer allows.
        max: usize,
    },
    /// A target entry matched no module of the model.
    #[error("target `{target}` matches no adaptable module; closest paths: {}", closest.join(", "))]
    NoTargetMatch {
        /// The target as written in the config.
        target: String,
        /// The existing module paths that are closest to it.
        closest: Vec<String>,
    },
    /// A regular expression in a config does not compile.
    #[error("invalid pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it does not compile.
        reason: String,
    },
    /// A config value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A tensor has a shape other than the one the layer needs.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// Name of the tensor.
        name: String,
        /// Shape the layer needs.
        expected: Vec<usize>,
        /// Shape that was given.
        actual: Vec<usize>,
    },
    /// A tensor that must be present is missing.
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// A tensor read from a file holds NaN or infinite values.
    #[error("tensor `{0}` contains NaN or infinite values")]
    NonFiniteTensor(String),
    /// A merge would write NaN or infinite values.
    #[error("merging adapter `{adapter}` into `{path}` gives non-finite weights; nothing was changed")]
    NonFinite {
        /// Module path of the layer.
        path: String,
        /// The adapter being merged.
        adapter: String,
    },
    /// No adapter with this name exists.
    #[error("unknown adapter `{name}`; known adapters: {}", known.join(", "))]
    UnknownAdapter {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// An adapter with this name already exists on the layer.
    #[error("adapter `{name}` already exists on `{path}`")]
    DuplicateAdapter {
        /// The duplicated name.
        name: String,
        /// Module path of the layer.
        path: String,
    },
    /// The operation is not defined for this method or layer.
    #[error("{0}")]
    Unsupported(String),
    /// The adapter is merged into the base weights and cannot be changed until unmerged.
    #[error("adapter `{0}` is merged; unmerge it first")]
    Merged(String),
    /// A file could not be read or written.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document is malformed.
    #[error("malformed JSON in `{path}`: {source}")]
    Json {
        /// The file or document.
        path: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file is malformed or truncated.
    #[error("malformed safetensors `{path}`: {reason}")]
    Safetensors {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Result alias used across burn-peft.
pub type Result<T> = std::result::Result<T, PeftError>;
