//! Reference models for burn-peft, written the way a user writes a Burn model, with the typed
//! wrappers at every site a method can attach to: Llama, GPT-2 and BERT, loading HF checkpoints
//! through `peft-hf`, and [`HfModel`], which picks one by `config.json`'s `model_type`.
//!
//! The models are generic over the adapter of their linear layers: `Llama<B, Lora<B>>` carries
//! LoRA only; `Llama<B, WeightAdapter<B>>` (what [`HfModel`] defaults to) carries LoRA and IA3
//! mixed, chosen per adapter.
#![warn(missing_docs)]

pub mod attention;
pub mod batch;
pub mod bert;
pub mod generate;
pub mod gpt2;
pub mod hf_config;
pub mod hf_model;
pub mod llama;
#[cfg(feature = "text")]
pub mod text;

pub use attention::{AdaptedLinear, LinearAdapter};
pub use batch::{KvCache, Padding, TokenBatch};
pub use generate::{CausalLm, GenerationConfig, generate};
pub use hf_config::HfModelConfig;
pub use hf_model::HfModel;
