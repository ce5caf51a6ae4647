//! Hugging Face formats for burn-peft, in one place: transformers checkpoints
//! (`model.safetensors`) into and out of Burn modules through an explicit [`WeightMap`], HF peft
//! adapter folders in both directions ([`load_adapter`], [`save_adapter`], one reader and one
//! writer in [`folder`]), and merging an adapter into a checkpoint without model code
//! ([`merge_checkpoint`], what `peft merge` runs).
//!
//! Each method's piece of peft's format has its own file (`lora.rs`, `ia3.rs`, `prefix.rs`);
//! [`HfMethod`] is the table that picks one by `peft_type`. The methods themselves come from
//! `peft-lora` and `peft-ptuning`; `peft-models` loads its reference models through
//! [`WeightMap`]. The facade crate `peft` re-exports this crate as `peft::hf`.
//!
//! An `adapter_config.json` read as peft reads it, per-module ranks and alphas included:
//!
//! ```
//! use peft_hf::HfAdapterConfig;
//!
//! let config = HfAdapterConfig::parse(
//!     r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
//!         "rank_pattern": {"v_proj": 4}}"#,
//!     "adapter_config.json",
//! )?;
//! assert_eq!(config.lora_scaling("model.layers.0.self_attn.q_proj")?, (8, 2.0));
//! assert_eq!(config.lora_scaling("model.layers.0.self_attn.v_proj")?, (4, 4.0));
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

mod adapter;
pub mod adapterhub;
mod config;
pub mod folder;
mod host_linear;
mod host_lstm;
mod ia3;
pub mod keys;
mod lora;
mod merge;
mod prefix;
mod prompt;
pub mod torch_file;
mod weight_map;

pub use adapterhub::AdapterHubFolder;
pub use adapter::{HfMethod, LoadedAdapter, SaveOptions, load_adapter, save_adapter};
pub use config::{HfAdapterConfig, OneOrMany};
pub use folder::AdapterFolder;
pub use merge::{MergeSummary, merge_checkpoint};
pub use weight_map::{HfCheckpoint, Layout, LoadReport, WeightMap, export_hf_weights, load_hf_weights};
