//! The core of burn-peft: the one trait every method implements ([`Tuner`], built from its
//! [`MethodConfig`]), the wrapper that carries named adapters on any layer ([`Tuned`]), the model
//! walk that reaches them by path ([`Adaptable`], [`PeftModel`]), strict HF-peft-style targeting,
//! trainability, typed errors and all-or-nothing file writes. Nothing here knows a file format.
//!
//! The methods live in their own crates (`peft-lora`, `peft-adapter`, `peft-ptuning`, with 4-bit
//! bases in `peft-quant`), file formats in `peft-hf`; the facade crate `peft` gathers them. A user
//! who writes a method of their own needs only this crate. See `docs/architecture.md` for how a
//! tensor flows from a user's layer through these pieces.
//!
//! Targeting follows HF peft's `target_modules`: a name matches a path exactly or as a `.`-suffix, a
//! regex must match the whole path.
//!
//! ```
//! use peft_core::{LayerKind, Targeting, TargetMatcher, TargetModules};
//!
//! let names = TargetMatcher::new(&Targeting::names(&["q_proj", "v_proj"]))?;
//! assert!(names.matches("layers.0.self_attn.q_proj", LayerKind::Linear));
//! assert!(!names.matches("layers.0.self_attn.k_proj", LayerKind::Linear));
//!
//! let regex = TargetMatcher::new(&Targeting::new(TargetModules::Regex(r".*\.0\..*proj".into())))?;
//! assert!(regex.matches("layers.0.mlp.up_proj", LayerKind::Linear));
//! assert!(!regex.matches("layers.1.mlp.up_proj", LayerKind::Linear));
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

pub mod adapter_file;
mod adapter_tensors;
pub mod checkpoint;
pub mod gate;
mod error;
mod flat_linear;
mod layer;
mod model;
mod params;
mod rows;
pub mod path;
pub mod targeting;
#[cfg(test)]
mod testing;
mod transfer;
mod tuned;
mod tuner;
mod union;
mod walk;
pub mod weights;

pub use adapter_tensors::AdapterTensors;
pub use error::{PeftError, Result};
pub use flat_linear::{flat_linear, linear_forward};
pub use layer::{Layer, LayerKind, Residual, ResidualAdd};
pub use model::{PeftModel, TunedLayerInfo};
pub use rows::Rows;
pub use params::{ParamInfo, TrainMode, TrainableReport, all_finite, frozen_like, in_dtype, list_params, set_trainable, trainable, upcast_half};
pub use targeting::{TargetMatcher, TargetModules, Targeting};
pub use transfer::transfer_base_weights;
pub use tuned::{AdapterSlots, Tuned};
pub use union::ConfigUnion;
pub use tuner::{Combination, MajoritySign, MethodConfig, Site, Tuner, TunerForward};
pub use walk::{Adaptable, TunedVisitor, join_path};
