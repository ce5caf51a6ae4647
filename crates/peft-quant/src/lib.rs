//! 4-bit quantized weights for burn-peft, bit-exact with bitsandbytes: NF4 and FP4 blockwise
//! quantization, double quantization of the scales, bitsandbytes' serialized layout in
//! safetensors, and [`QLinear`], the frozen 4-bit layer under QLoRA. See `docs/quantization.md`.
//!
//! `peft-lora` puts LoRA on [`QLinear`] (QLoRA); `peft-models` uses [`BaseLinear`] (dense or 4-bit)
//! as the base of every linear layer; the `peft quantize` command writes bitsandbytes' layout.
//! Backends: the CPU path works on any Burn backend; the `cuda` and `wgpu` features add a CubeCL
//! dequantization kernel, `flex` bf16 on burn-flex. The facade crate `peft` re-exports this crate
//! as `peft::quant`.
//!
//! ```
//! use peft_quant::{QuantConfig, Quantized4bit};
//!
//! let weights: Vec<f32> = (0..4096).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let q = Quantized4bit::quantize("w", &weights, &[64, 64], "float32", QuantConfig::qlora())?;
//! let back = q.dequantize();
//! let worst = weights.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
//! // Within half of NF4's widest step (1.0 - 0.723) at a block absmax of 1.
//! assert!(worst < 0.15, "{worst}");
//! assert!(q.bits_per_parameter() < 4.2, "4-bit codes, an 8-bit scale per 64 weights");
//! # Ok::<(), peft_quant::QuantError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod backend;
mod base_linear;
pub mod blockwise;
mod code;
mod dynamic_map;
mod error;
#[cfg(feature = "cubecl")]
mod fusion;
pub mod fused;
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
