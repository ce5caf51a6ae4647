//! Reference models for burn-peft, written the way a user writes a Burn model, with the typed
//! wrappers at every site a method can attach to: Llama, GPT-2 and BERT, loading HF checkpoints
//! through `peft-hf`, and [`HfModel`], which picks one by `config.json`'s `model_type`.
//!
//! The models are generic over the adapter of their linear layers: `Llama<B, Lora<B>>` carries
//! LoRA only; `Llama<B, WeightAdapter<B>>` (what [`HfModel`] defaults to) carries LoRA and IA3
//! mixed, chosen per adapter. Their linear layers are `peft-quant`'s `BaseLinear`, dense or 4-bit
//! ([`HfModel::quantize`]); decoders take padded or packed batches ([`TokenBatch`]), a key/value
//! cache ([`KvCache`]) and [`generate()`]. `peft-train` fine-tunes them; the facade crate `peft`
//! re-exports this crate as `peft::models`.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use peft_core::{PeftModel, Targeting};
//! use peft_lora::LoraConfig;
//! use peft_models::{HfModel, HfModelConfig};
//!
//! let config = HfModelConfig::parse(
//!     r#"{"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
//!         "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 32}"#,
//!     "config.json",
//! )?;
//! let device = Default::default();
//! let mut model = HfModel::<NdArray>::init(&config, &device)?;
//! let attached = model.add_adapter("task", &LoraConfig::new(Targeting::names(&["q_proj", "v_proj"])).with_r(4))?;
//! assert_eq!(attached.len(), 2 * 2);
//! let tokens = Tensor::<NdArray, 2, Int>::from_ints([[1, 5, 9, 2]], &device);
//! assert_eq!(model.forward(tokens).dims(), [1, 4, 64]);
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

pub mod attention;
pub mod batch;
pub mod bert;
pub mod classify;
pub mod generate;
pub mod gpt2;
pub mod hf_config;
pub mod hf_model;
pub mod llama;
#[cfg(feature = "text")]
pub mod text;

pub use attention::{AdaptedLinear, LinearAdapter};
pub use batch::{KvCache, Padding, TokenBatch};
pub use classify::{CLASSIFIER_HEADS, classifier_head};
pub use generate::{CausalLm, GenerationConfig, HeadInput, generate};
pub use hf_config::HfModelConfig;
pub use hf_model::HfModel;
