//! The LoRA family for burn-peft: LoRA, rsLoRA, DoRA and PiSSA on `Linear`, `Embedding` and
//! `Conv2d` and on the 4-bit `QLinear` (QLoRA); IA3 ([`ia3`]); merging, weighted combination,
//! LoRA on any unmodified module by path, and [`WeightAdapter`], which holds either method so
//! that one model mixes them.
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
