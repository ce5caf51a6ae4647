//! The LoRA family for burn-peft: LoRA, rsLoRA, DoRA and PiSSA on `Linear`, `Embedding` and
//! `Conv2d` and on the 4-bit `QLinear` (QLoRA); IA3 ([`ia3`]); merging, weighted combination,
//! LoRA on any unmodified module by path, and [`WeightAdapter`], which holds either method so
//! that one model mixes them.
//!
//! Every method here is a `peft-core` `Tuner`: wrap a layer in `Tuned` (or use the aliases
//! [`LoraLinear`], [`LoraEmbedding`], [`LoraConv`]) and add adapters by config. `peft-hf` reads and
//! writes them as HF peft folders; the facade crate `peft` re-exports this crate as `peft::lora`.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::nn::LinearConfig;
//! use burn::tensor::{Distribution, Tensor};
//! use peft_core::{PeftModel, Targeting, Tuned};
//! use peft_lora::{LoraConfig, LoraLinear};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Mlp<B: burn::tensor::backend::Backend> {
//!     up: LoraLinear<B>,
//! }
//! peft_core::adaptable!(Mlp { up });
//!
//! let device = Default::default();
//! let mut model = Mlp::<NdArray> { up: Tuned::new(LinearConfig::new(16, 8).init(&device)) };
//! let x = Tensor::<NdArray, 2>::random([4, 16], Distribution::Default, &device);
//! let base = model.up.forward(x.clone()).into_data();
//!
//! // B starts at zero: a fresh adapter gives the base's output, bit for bit.
//! model.add_adapter("task", &LoraConfig::new(Targeting::names(&["up"])).with_r(4).with_alpha(8.0))?;
//! assert_eq!(model.up.forward(x.clone()).into_data(), base);
//! // Disabled, any adapter gives the base back exactly.
//! model.disable_adapters()?;
//! assert_eq!(model.up.forward(x).into_data(), base);
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

mod base_linear;
mod combine;
mod config;
mod conv;
pub mod ia3;
pub mod init;
mod lora;
mod path;
mod qlora;
mod svd;
mod weight_adapter;

use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, Linear};
use peft_core::Tuned;

pub use combine::combine;
pub use config::{LoraConfig, LoraInit, lora_scaling};
pub use conv::LoraConv2d;
pub use ia3::{Ia3, Ia3Config};
pub use lora::{Lora, broadcast_last, check_shape};
pub use path::PathLora;
pub use qlora::{QLoraLinear, QloraMerge, merge_qlora};
pub use svd::svd;
pub use weight_adapter::{WeightAdapter, WeightAdapterConfig};

/// A `Linear` carrying named LoRA (or DoRA) adapters.
pub type LoraLinear<B> = Tuned<B, Linear<B>, Lora<B>>;
/// An `Embedding` carrying named LoRA adapters.
pub type LoraEmbedding<B> = Tuned<B, Embedding<B>, Lora<B>>;
/// A `Conv2d` carrying named LoRA adapters.
pub type LoraConv<B> = Tuned<B, Conv2d<B>, LoraConv2d<B>>;
/// A `Linear` carrying named IA3 adapters.
pub type Ia3Linear<B> = Tuned<B, Linear<B>, Ia3<B>>;
/// A `Linear` carrying named LoRA and IA3 adapters, mixed.
pub type MixedLinear<B> = Tuned<B, Linear<B>, WeightAdapter<B>>;
