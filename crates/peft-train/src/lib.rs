//! The fine-tuning workflow of burn-peft: read training data in the shapes people have, render
//! it with the model's chat template, tokenize it with the model's tokenizer, decide which tokens
//! the loss covers, and train with a resumable loop (see `docs/training.md`).
#![warn(missing_docs)]

mod batch;
pub mod checkpoint;
mod config;
mod data;
mod encode;
mod eval;
mod loss;
mod plan;
mod plot;
mod prepare;
mod template;
mod train;

pub use batch::{LmBatch, rows};
pub use config::{Method, Schedule, TrainConfig, learning_rate, modules};
pub use data::{Dataset, Message, Record};
pub use encode::{Encoded, Encoder};
pub use eval::{EvalResult, evaluate};
pub use loss::{host_sum, lm_loss_rows};
pub use plan::{BatchStream, Cursor, DataPlan};
pub use plot::plot_losses;
pub use prepare::Prepared;
pub use template::{CHATML, ChatTemplate};
pub use train::{Observer, StepLog, TrainSetup, TrainSummary, train};
