//! Reference models for burn-peft, written the way a user writes a Burn model, with the typed
//! wrappers at every site a method can attach to; and a small synthetic task to fine-tune them on.
#![warn(missing_docs)]

pub mod mlp;
pub mod synthetic;
pub mod tiny;
pub mod train;

pub use tiny::{TinyTransformer, TinyTransformerConfig};
