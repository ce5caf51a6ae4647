//! Bottleneck adapters for burn-peft: a down-projection `d → d/rf`, a non-linearity, an
//! up-projection `d/rf → d`, added to a sub-layer's output (sequential: Pfeiffer, Houlsby) or
//! computed from its input in parallel (He et al.'s parallel adapter).
#![warn(missing_docs)]

mod bottleneck;
mod config;

pub use bottleneck::Bottleneck;
pub use config::{AdapterActivation, AdapterPlacement, BottleneckConfig};

/// A sub-layer `L` carrying named bottleneck adapters.
pub type AdaptedSublayer<B, L> = peft_core::Tuned<B, L, Bottleneck<B>>;
