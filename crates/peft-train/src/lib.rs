//! The fine-tuning workflow of burn-peft: read training data in the shapes people have, render
//! it with the model's chat template, tokenize it with the model's tokenizer, and decide which
//! tokens the loss covers (see `docs/training.md`).
#![warn(missing_docs)]

mod batch;
mod data;
mod encode;
mod eval;
mod loss;
mod template;

pub use batch::{LmBatch, rows};
pub use data::{Dataset, Message, Record};
pub use encode::{Encoded, Encoder};
pub use eval::{EvalResult, evaluate};
pub use loss::lm_loss_sum;
pub use template::{CHATML, ChatTemplate};
