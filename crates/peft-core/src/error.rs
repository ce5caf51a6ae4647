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
    /// A computed result (logits, dequantized weights) holds NaN or infinite values; it is not
    /// written.
    #[error("{0} came out NaN or infinite")]
    NonFiniteResult(String),
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
    /// The adapter is merged into the base weights and cannot be changed until unmerged.
    #[error("adapter `{0}` is merged; unmerge it first")]
    Merged(String),
    /// A tensor was given that has no place: not a parameter of the adapter or model, or not
    /// part of the method's file format.
    #[error("unexpected tensor `{name}`: {reason}")]
    UnexpectedTensor {
        /// Name of the tensor.
        name: String,
        /// Why it has no place.
        reason: String,
    },
    /// An active adapter's method cannot fold into the base weights.
    #[error(
        "adapter `{adapter}` ({method} at `{path}`) cannot be merged into the weights{reason}; deactivate it with `set_active_adapters`, or merge only the mergeable adapters with `merge_mergeable_adapters`"
    )]
    NotMergeable {
        /// The adapter.
        adapter: String,
        /// Its method (HF peft's `peft_type`).
        method: &'static str,
        /// Module path of the layer.
        path: String,
        /// Why, when more than the method says it (starts with `: `), or empty.
        reason: String,
    },
    /// Adapters that cannot be combined into one.
    #[error("cannot combine adapters: {0}")]
    CannotCombine(String),
    /// A method option that this kind of layer does not support.
    #[error("{feature} is not supported on `{path}`")]
    NotSupportedOn {
        /// The option (`DoRA`, `PiSSA`, `grouped convolution`, ...).
        feature: String,
        /// Module path of the layer.
        path: String,
    },
    /// The model has no layer wrapped for the method of a config.
    #[error("no layer of the model is wrapped for {method} adapters, which act on {site}; wrap the layers they should adapt in `Tuned` (see docs/custom-models.md)")]
    NoWrappedLayer {
        /// The method.
        method: &'static str,
        /// Where the method acts, in words.
        site: &'static str,
    },
    /// Wrapped layers that the model walk does not reach.
    #[error("wrapped layers {} are not reached by the model walk: list their fields in the `adaptable!` of the module that holds them", paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "))]
    UnreachedLayers {
        /// Their module paths.
        paths: Vec<String>,
    },
    /// A sub-layer that an adapter needs the output width of does not give it.
    #[error("`{path}` does not report its output width: name the field that gives it with `adaptable!(Name {{ ... }}, output = field)`")]
    NoOutputWidth {
        /// Module path of the sub-layer.
        path: String,
    },
    /// A module that has no parameters where some are needed (to find its device or shape).
    #[error("`{0}` has no parameters")]
    NoParameters(String),
    /// A value of a model or adapter config that this library does not implement.
    #[error("unknown {key} `{value}` (supported: {supported})")]
    UnsupportedValue {
        /// The config key (`model_type`, `peft_type`, `rope_type`, ...).
        key: String,
        /// The value found.
        value: String,
        /// What is supported.
        supported: String,
    },
    /// A tensor of a type that cannot be used where it is.
    #[error("tensor `{name}` has dtype {dtype}, expected {expected}")]
    UnsupportedDtype {
        /// Name of the tensor.
        name: String,
        /// Its dtype.
        dtype: String,
        /// What is needed.
        expected: &'static str,
    },
    /// 4-bit quantization failed (`peft-quant`'s error).
    #[error(transparent)]
    Quantization(Box<dyn std::error::Error + Send + Sync>),
    /// A tokenizer file could not be read, or text could not be tokenized.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A file could not be read or written.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model's `config.json` describes more parameters than its checkpoint holds: refused from
    /// the checkpoint's header, before anything is built.
    #[error("`{config}` describes a model of at least {needed} parameters, but `{checkpoint}` holds {holds} values: they do not belong together")]
    CheckpointTooSmall {
        /// The config file.
        config: String,
        /// Parameters the config needs at least.
        needed: String,
        /// The checkpoint.
        checkpoint: String,
        /// Values the checkpoint holds.
        holds: u64,
    },
    /// A path to read or write is not a regular file (a FIFO, a device, a folder, ...).
    #[error("`{path}` is {kind}, not a regular file")]
    NotAFile {
        /// The path.
        path: String,
        /// What it is.
        kind: &'static str,
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
    /// An optimizer state in a training checkpoint is malformed or does not belong to the model.
    #[error("optimizer state `{path}`: {reason}")]
    OptimizerRecord {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A PyTorch (`torch.save`) file is malformed, truncated or of a layout this reader does not
    /// take.
    #[error("malformed PyTorch file `{path}`: {reason}")]
    TorchFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PyTorch file's pickle names a callable other than the tensor rebuilders and containers
    /// a state dict uses: it could run code, so it is refused.
    #[error("`{path}` asks to run `{global}`, which a weights file never needs; it was not run (only tensors and plain containers are read)")]
    UnsafePickle {
        /// The file.
        path: String,
        /// The Python callable or class the pickle names.
        global: String,
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
