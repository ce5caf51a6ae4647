//! burn-peft: parameter-efficient fine-tuning for [Burn](https://burn.dev).
//!
//! One trait ([`Tuner`]) carries every method; [`Tuned`] wraps a layer of your model with named
//! adapters; [`PeftModel`] adds, activates, disables, merges and deletes them across the model.
//!
//! - [`lora`]: LoRA, rsLoRA, DoRA, PiSSA and IA3 on `Linear`, `Embedding` and `Conv2d`, and LoRA
//!   on any unmodified module by parameter path.
//! - [`adapter`]: bottleneck adapters (Pfeiffer, Houlsby, parallel).
//! - [`ptuning`]: prefix tuning at attention keys and values.
//! - [`quant`]: bitsandbytes-exact NF4/FP4 4-bit weights and `QLinear`, the base of QLoRA.
//! - [`hf`]: Hugging Face formats: transformers checkpoints, HF peft adapter folders both ways,
//!   checkpoint-level merges.
//! - [`models`]: reference Llama, GPT-2 and BERT written as a user would.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::nn::LinearConfig;
//! use peft::prelude::*;
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Mlp<B: burn::tensor::backend::Backend> {
//!     up: LoraLinear<B>,
//!     down: LoraLinear<B>,
//! }
//! peft::adaptable!(Mlp { up, down });
//!
//! let device = Default::default();
//! let mut model = Mlp::<NdArray> {
//!     up: Tuned::new(LinearConfig::new(16, 32).init(&device)),
//!     down: Tuned::new(LinearConfig::new(32, 4).init(&device)),
//! };
//! let attached = model.add_adapter("task", &LoraConfig::new(Targeting::names(&["up", "down"])).with_r(4)).unwrap();
//! assert_eq!(attached, ["up", "down"]);
//! let report = TrainableReport::new(&model, &TrainMode::adapters());
//! assert_eq!(report.trainable, 4 * (16 + 32) + 4 * (32 + 4));
//! ```
#![warn(missing_docs)]

pub use peft_adapter as adapter;
pub use peft_core as core;
pub use peft_core::{Adaptable, Layer, MethodConfig, PeftError, PeftModel, Result, TrainMode, TrainableReport, Tuned, Tuner, TunerForward, adaptable};
pub use peft_hf as hf;
pub use peft_lora as lora;
pub use peft_models as models;
pub use peft_ptuning as ptuning;
pub use peft_quant as quant;

/// The names most programs need.
pub mod prelude {
    pub use peft_adapter::{AdaptedSublayer, AdapterActivation, AdapterPlacement, Bottleneck, BottleneckConfig};
    pub use peft_core::{
        Adaptable, Combination, Layer, LayerKind, PeftError, PeftModel, TargetModules, Targeting, TrainMode, TrainableReport, Tuned,
        set_trainable, transfer_base_weights,
    };
    pub use peft_hf::{HfCheckpoint, HfMethod, LoadedAdapter, SaveOptions, WeightMap, load_adapter, save_adapter};
    pub use peft_lora::{
        Ia3Config, Ia3Linear, LoraConfig, LoraConv, LoraEmbedding, LoraInit, LoraLinear, MixedLinear, PathLora, QLoraLinear, WeightAdapter,
        WeightAdapterConfig, merge_qlora,
    };
    pub use peft_ptuning::{KvSite, PrefixConfig, PrefixKv};
    pub use peft_quant::{QLinear, QuantConfig, QuantType, Quantized4bit};
}

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
