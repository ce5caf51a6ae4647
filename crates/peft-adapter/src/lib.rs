//! Bottleneck adapters for burn-peft: a down-projection `d → d/rf`, a non-linearity, an
//! up-projection `d/rf → d`, added to a sub-layer's output (sequential: Pfeiffer, Houlsby) or
//! computed from its input in parallel (He et al.'s parallel adapter).
//!
//! [`Bottleneck`] is a method of `peft-core`'s one trait: wrap a sub-layer of your model in
//! [`AdaptedSublayer`] (a `Tuned` layer) and add adapters by config through `PeftModel`; the
//! facade crate `peft` re-exports it as `peft::adapter`. The up-projection starts at zero, so a
//! fresh adapter leaves the model unchanged.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{Distribution, Tensor};
//! use peft_adapter::{AdaptedSublayer, BottleneckConfig};
//! use peft_core::{PeftModel, Targeting, Tuned};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Block<B: burn::tensor::backend::Backend> {
//!     ffn: AdaptedSublayer<B, Linear<B>>,
//! }
//! peft_core::adaptable!(Block { ffn });
//!
//! let device = Default::default();
//! let mut block = Block::<NdArray> { ffn: Tuned::new(LinearConfig::new(32, 32).init(&device)) };
//! let x = Tensor::<NdArray, 2>::random([2, 32], Distribution::Default, &device);
//! let before = block.ffn.forward(x.clone()).into_data();
//! block.add_adapter("task", &BottleneckConfig::pfeiffer(Targeting::names(&["ffn"])))?;
//! assert_eq!(block.ffn.forward(x).into_data(), before);
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

mod bottleneck;
mod config;

pub use bottleneck::Bottleneck;
pub use config::{AdapterActivation, AdapterPlacement, BottleneckConfig};

/// A sub-layer `L` carrying named bottleneck adapters.
pub type AdaptedSublayer<B, L> = peft_core::Tuned<B, L, Bottleneck<B>>;

/// The norm closing a post-norm residual sub-layer (`LayerNorm(h + r)`, called with a
/// [`peft_core::Residual`]), carrying named bottleneck adapters where AdapterHub puts them.
pub type AdaptedNorm<B> = peft_core::Tuned<B, burn::nn::LayerNorm<B>, Bottleneck<B>>;

/// The add closing a pre-norm residual sub-layer (`h + r`, a [`peft_core::ResidualAdd`] called
/// with a [`peft_core::Residual`]), carrying named bottleneck adapters where AdapterHub puts them.
pub type AdaptedResidual<B> = peft_core::Tuned<B, peft_core::ResidualAdd<B>, Bottleneck<B>>;
