//! The core of burn-peft: the one trait every method implements ([`Tuner`]), the wrapper that
//! carries named adapters on any layer ([`Tuned`]), the model walk that reaches them by path
//! ([`Adaptable`], [`PeftModel`]), strict HF-peft-style targeting, trainability and typed errors.
//!
//! See `docs/architecture.md` for how a tensor flows from a user's layer through these pieces.
#![warn(missing_docs)]

mod adapter_tensors;
pub mod checkpoint;
mod error;
pub mod hf;
pub mod hf_weights;
mod layer;
mod model;
mod params;
pub mod targeting;
mod transfer;
mod tuned;
mod tuner;
mod weights;

pub use adapter_tensors::AdapterTensors;
pub use error::{PeftError, Result};
pub use layer::{Layer, LayerKind, linear_features};
pub use model::{Adaptable, PeftModel, TunedLayerInfo, TunedVisitor, join_path};
pub use params::{ParamInfo, TrainMode, TrainableReport, all_finite, frozen_like, in_dtype, list_params, set_trainable, trainable, upcast_half};
pub use targeting::{TargetMatcher, TargetModules, Targeting};
pub use transfer::transfer_base_weights;
pub use tuned::{AdapterSlots, Tuned};
pub use tuner::{Combination, MethodConfig, Site, Tuner, TunerForward};
