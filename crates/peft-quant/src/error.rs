//! Typed errors of 4-bit quantization and its checkpoint layout.

use thiserror::Error;

/// What can go wrong while quantizing, dequantizing, reading or writing 4-bit weights.
#[derive(Debug, Error)]
pub enum QuantError {
    /// The quant type is neither `nf4` nor `fp4`.
    #[error("unknown quant type `{0}` (expected nf4 or fp4)")]
    UnknownQuantType(String),
    /// The block size is outside 32..=4096 or not a power of two.
    #[error("invalid block size {0} (expected a power of two from 32 to 4096)")]
    InvalidBlocksize(usize),
    /// The tensor holds NaN or infinity, which blockwise absmax scaling cannot represent.
    #[error("tensor `{0}` holds NaN or infinite values")]
    NonFinite(String),
    /// The quant state is missing fields, inconsistent, or does not match the tensors.
    #[error("corrupt quant state for `{name}`: {reason}")]
    CorruptState {
        /// The weight.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// Quantizing `weight` would write a tensor named like one the input already holds.
    #[error("tensor `{existing}` is already in the input, and quantizing `{weight}` writes a tensor of that name (is the file already quantized? choose the weights with --include)")]
    NameCollision {
        /// The weight to quantize.
        weight: String,
        /// The input tensor whose name quantizing it would write.
        existing: String,
    },
    /// A tensor of the layout is missing.
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// The safetensors file is malformed or truncated.
    #[error("malformed safetensors `{path}`: {reason}")]
    Safetensors {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("I/O error on `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, QuantError>;

impl From<QuantError> for peft_core::PeftError {
    fn from(error: QuantError) -> Self {
        Self::Quantization(Box::new(error))
    }
}
