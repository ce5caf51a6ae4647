//! The core of burn-peft: the one trait every method implements ([`Tuner`], built from its
//! [`MethodConfig`]), the wrapper that carries named adapters on any layer ([`Tuned`]), the model
//! walk that reaches them by path ([`Adaptable`], [`PeftModel`]), strict HF-peft-style targeting,
//! trainability, typed errors and all-or-nothing file writes. Nothing here knows a file format.
//!
//! See `docs/architecture.md` for how a tensor flows from a user's layer through these pieces.
#![warn(missing_docs)]

mod adapter_tensors;
pub mod checkpoint;
mod error;
mod layer;
mod model;
mod params;
pub mod path;
pub mod targeting;
#[cfg(test)]
mod testing;
mod transfer;
mod tuned;
mod tuner;
mod walk;
pub mod weights;

pub use adapter_tensors::AdapterTensors;
pub use error::{PeftError, Result};
pub use layer::{Layer, LayerKind};
pub use model::{PeftModel, TunedLayerInfo};
pub use params::{ParamInfo, TrainMode, TrainableReport, all_finite, frozen_like, in_dtype, list_params, set_trainable, trainable, upcast_half};
pub use targeting::{TargetMatcher, TargetModules, Targeting};
pub use transfer::transfer_base_weights;
pub use tuned::{AdapterSlots, Tuned};
pub use tuner::{Combination, MethodConfig, Site, Tuner, TunerForward};
pub use walk::{Adaptable, TunedVisitor, join_path};
