//! Reference models for burn-peft, written the way a user writes a Burn model, with the typed
//! wrappers at every site a method can attach to: Llama, GPT-2 and BERT loading HF checkpoints,
//! and a small transformer with a synthetic task to fine-tune.
#![warn(missing_docs)]

pub mod attention;
pub mod bert;
pub mod gpt2;
pub mod hf_adapter;
pub mod hf_config;
pub mod hf_model;
pub mod llama;
pub mod mlp;
pub mod synthetic;
#[cfg(feature = "text")]
pub mod text;
pub mod tiny;
pub mod train;

pub use attention::{AdaptedLinear, LinearAdapter};
pub use hf_adapter::{HfMethod, LoadedAdapter, SaveOptions, load_adapter, save_adapter};
pub use hf_config::HfModelConfig;
pub use hf_model::HfModel;
pub use tiny::{TinyTransformer, TinyTransformerConfig};
