//! The fine-tuning workflow of burn-peft: read training data in the shapes people have, render
//! it with the model's chat template, tokenize it with the model's tokenizer, decide which tokens
//! the loss covers, and train with a resumable loop (see `docs/training.md`).
//!
//! It trains `peft-models`' reference models with any method of `peft-lora`, `peft-ptuning` and
//! `peft-quant` (QLoRA), or all parameters, and writes adapters as HF peft folders through
//! `peft-hf`; the `peft train`, `peft eval` and `peft generate` commands (crate `peft-cli`) are
//! thin shells over it.
//!
//! For chat data the loss covers the completion only: the tokens of the full conversation after
//! the prompt rendered with the generation prompt.
//!
//! ```
//! use peft_train::{CHATML, ChatTemplate, Message};
//!
//! let template = ChatTemplate::new(CHATML, "", "<|im_end|>")?;
//! let messages = [Message::new("user", "Is this review positive? Great film."), Message::new("assistant", "positive")];
//! let prompt = template.render(&messages[..1], true)?;
//! let full = template.render(&messages, false)?;
//! assert_eq!(prompt, "<|im_start|>user\nIs this review positive? Great film.<|im_end|>\n<|im_start|>assistant\n");
//! assert_eq!(&full[prompt.len()..], "positive<|im_end|>\n");
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

#[cfg(feature = "mimalloc")]
pub mod allocator;
mod batch;
pub mod checkpoint;
mod config;
mod data;
mod encode;
mod eval;
mod loss;
mod optimizer_record;
mod plan;
mod plot;
mod prepare;
mod template;
mod train;

pub use batch::{ClsBatch, LmBatch, rows};
pub use config::{AdapterPreset, EncoderType, Method, Schedule, Task, TrainConfig, learning_rate, modules};
pub use data::{Dataset, Message, Record};
pub use encode::{Encoded, Encoder};
pub use eval::{EvalResult, evaluate, evaluate_classifier};
pub use loss::{LmLoss, classification_loss, classification_loss_rows, fused_lm_loss, host_sum, lm_loss, lm_loss_rows};
pub use plan::{BatchStream, Cursor, DataPlan};
pub use plot::plot_losses;
pub use prepare::Prepared;
pub use template::{CHATML, ChatTemplate};
pub use train::{Observer, StepLog, TrainSetup, TrainSummary, check_examples_fit, check_task, train};
