//! Development support for burn-peft, not published: a small transformer whose every site can
//! carry adapters ([`TinyTransformer`]), a synthetic sentiment task with a domain shift
//! ([`synthetic`]), a plain training loop ([`train`]) and a residual MLP stack generic over its
//! linear layer ([`mlp`]). The main example, the composition tests and the benchmarks use them;
//! fine-tuning real models lives in the reference models and the training workflow.
#![warn(missing_docs)]

pub mod mlp;
pub mod synthetic;
pub mod tiny;
pub mod train;

pub use tiny::{TinyTransformer, TinyTransformerConfig};
