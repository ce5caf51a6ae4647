//! burn-peft: parameter-efficient fine-tuning for [Burn](https://burn.dev).
//!
//! One trait ([`Tuner`]) carries every method; [`Tuned`] wraps a layer of your model with named
//! adapters; [`PeftModel`] adds, activates, disables, merges and deletes them across the model.
//!
//! - [`lora`]: LoRA, rsLoRA, DoRA, PiSSA and IA3 on `Linear`, `Embedding` and `Conv2d`, and LoRA
//!   on any unmodified module by parameter path.
//! - [`adapter`]: bottleneck adapters (Pfeiffer, Houlsby, parallel, gated).
//! - [`presets`]: MAM and UniPELT, several methods as one adapter ([`core::ConfigUnion`]).
//! - [`ptuning`]: prefix tuning at attention keys and values, prompt tuning before the input embeddings.
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
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub use peft_adapter as adapter;
pub use peft_core as core;
pub use peft_core::{Adaptable, Layer, MethodConfig, PeftError, Result, TrainMode, TrainableReport, Tuner, TunerForward, adaptable};

/// # Example
///
/// A `Linear` wrapped with two LoRA adapters: with none live, the output is the base's, bit
/// for bit; merged, it is what the unmerged adapters give.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Distribution, Tensor};
/// use peft::prelude::*;
/// use peft::lora::Lora;
///
/// let device = Default::default();
/// let mut layer: LoraLinear<NdArray> = Tuned::new(LinearConfig::new(16, 8).init(&device));
/// let x = Tensor::<NdArray, 2>::random([4, 16], Distribution::Default, &device);
/// let base = layer.forward(x.clone()).into_data();
///
/// let config = LoraConfig::new(Targeting::names(&["layer"])).with_r(2);
/// for name in ["a", "b"] {
///     let mut adapter = <Lora<NdArray> as peft::Tuner<_, _>>::init(&config, &mut layer.base, "layer")?;
///     adapter.b = peft::core::trainable(Tensor::random([2, 8], Distribution::Default, &device));
///     layer.add_adapter(name, adapter)?;
/// }
/// assert_eq!(layer.names(), ["a", "b"]);
/// let both = layer.forward(x.clone());
/// layer.set_active(&[]);
/// assert_eq!(layer.forward(x.clone()).into_data(), base);
/// layer.set_active(&["a", "b"]);
/// layer.merge("layer", true)?;
/// let merged = layer.forward(x.clone());
/// assert!((merged - both).abs().max().into_scalar() < 1e-5);
/// # Ok::<(), PeftError>(())
/// ```
#[doc(inline)]
pub use peft_core::Tuned;

/// # Example
///
/// Adapters by name across a whole model: add, activate several, disable (the exact base),
/// merge.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Distribution, Tensor};
/// use peft::prelude::*;
///
/// #[derive(burn::module::Module, Debug)]
/// struct Mlp<B: burn::tensor::backend::Backend> {
///     up: MixedLinear<B>,
///     down: MixedLinear<B>,
/// }
/// peft::adaptable!(Mlp { up, down });
/// impl<B: burn::tensor::backend::Backend> Mlp<B> {
///     fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
///         self.down.forward(burn::tensor::activation::relu(self.up.forward(x)))
///     }
/// }
///
/// let device = Default::default();
/// let mut model = Mlp::<NdArray> {
///     up: Tuned::new(LinearConfig::new(16, 32).init(&device)),
///     down: Tuned::new(LinearConfig::new(32, 16).init(&device)),
/// };
/// let x = Tensor::<NdArray, 2>::random([4, 16], Distribution::Default, &device);
/// let base = model.forward(x.clone()).into_data();
///
/// // LoRA on both layers and IA3 on `down`, in one model (its layers are `MixedLinear`).
/// assert_eq!(model.add_adapter("lora", &LoraConfig::new(Targeting::names(&["up", "down"])).with_r(4))?, ["up", "down"]);
/// assert_eq!(model.add_adapter("ia3", &Ia3Config::new(Targeting::names(&["down"])))?, ["down"]);
/// model.set_active_adapters(&["lora", "ia3"])?;
/// assert_eq!(model.adapter_names(), ["ia3", "lora"]);
///
/// model.disable_adapters()?;
/// assert_eq!(model.forward(x.clone()).into_data(), base);
/// model.enable_adapters()?;
/// model.merge_adapters(true)?;
/// // A target that matches nothing names the closest paths.
/// let err = model.add_adapter("x", &LoraConfig::new(Targeting::names(&["dwn"]))).unwrap_err();
/// assert!(err.to_string().contains("down"), "{err}");
/// # Ok::<(), PeftError>(())
/// ```
#[doc(inline)]
pub use peft_core::PeftModel;
pub use peft_hf as hf;
pub use peft_lora as lora;
pub use peft_models as models;
pub mod presets;
pub use peft_ptuning as ptuning;
pub use peft_quant as quant;

/// The names most programs need.
pub mod prelude {
    pub use peft_adapter::{AdaptedNorm, AdaptedSublayer, AdapterActivation, AdapterPlacement, Bottleneck, BottleneckConfig};
    pub use peft_core::{
        Adaptable, Combination, ConfigUnion, Layer, LayerKind, PeftError, PeftModel, Residual, TargetModules, Targeting, TrainMode, TrainableReport, Tuned,
        set_trainable, transfer_base_weights,
    };
    pub use peft_hf::{HfCheckpoint, HfMethod, LoadedAdapter, SaveOptions, WeightMap, load_adapter, save_adapter};
    pub use peft_lora::{
        Ia3Config, Ia3Linear, LoraConfig, LoraConv, LoraEmbedding, LoraInit, LoraLinear, MixedLinear, PathLora, QLoraLinear, WeightAdapter,
        WeightAdapterConfig, merge_qlora,
    };
    pub use peft_ptuning::{AttentionKv, KvSite, PrefixConfig, PrefixKv, PrefixProjectionConfig, PrefixProjectionSite, ProjectedPrefix, PromptEncoderConfig, PromptInput, PromptSite, PromptTuningConfig};
    pub use peft_quant::{QLinear, QuantConfig, QuantType, Quantized4bit};
}

/// The README's code blocks, compiled and run as doctests so that they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The guide to writing your own model, compiled and run the same way.
#[doc = include_str!("../../../docs/custom-models.md")]
#[cfg(doctest)]
pub struct CustomModelsDoctests;
