//! 4-bit quantized weights for burn-peft, bit-exact with bitsandbytes: NF4 and FP4 blockwise
//! quantization, double quantization of the scales, bitsandbytes' serialized layout in
//! safetensors, and [`QLinear`], the frozen 4-bit layer under QLoRA. See `docs/quantization.md`.
#![warn(missing_docs)]

pub mod backend;
mod base_linear;
pub mod blockwise;
mod code;
mod dynamic_map;
mod error;
#[cfg(feature = "cubecl")]
mod fusion;
#[cfg(feature = "ndarray")]
mod host;
#[cfg(feature = "cubecl")]
pub mod kernel;
pub mod layout;
mod qlinear;
mod state;

pub use base_linear::BaseLinear;
pub use code::{NF4_CODE, QuantType};
pub use dynamic_map::DYNAMIC_MAP;
pub use error::{QuantError, Result};
pub use qlinear::{QLinear, QLinearMeta};
pub use state::{Absmax, NESTED_BLOCKSIZE, QuantConfig, QuantState, Quantized4bit, double_quantize, mean};
