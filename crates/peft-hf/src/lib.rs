//! Hugging Face formats for burn-peft, in one place: transformers checkpoints
//! (`model.safetensors`) into and out of Burn modules through an explicit [`WeightMap`], HF peft
//! adapter folders in both directions ([`load_adapter`], [`save_adapter`], one reader and one
//! writer in [`folder`]), and merging an adapter into a checkpoint without model code
//! ([`merge_checkpoint`], what `peft merge` runs).
//!
//! Each method's piece of peft's format has its own file (`lora.rs`, `ia3.rs`, `prefix.rs`);
//! [`HfMethod`] is the table that picks one by `peft_type`.
#![warn(missing_docs)]

mod adapter;
mod config;
pub mod folder;
mod ia3;
pub mod keys;
mod lora;
mod merge;
mod prefix;
mod weight_map;

pub use adapter::{HfMethod, LoadedAdapter, SaveOptions, load_adapter, save_adapter};
pub use config::{HfAdapterConfig, OneOrMany};
pub use folder::AdapterFolder;
pub use merge::{MergeSummary, merge_checkpoint};
pub use weight_map::{HfCheckpoint, Layout, LoadReport, WeightMap, export_hf_weights, load_hf_weights};
