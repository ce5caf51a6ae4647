//! Evaluation: the token-weighted mean loss over a whole data set, its perplexity, and how often
//! the model predicts every completion token.

use burn::tensor::backend::Backend;
use peft_models::CausalLm;
use serde::Serialize;

use crate::{Encoded, LmBatch, host_sum, lm_loss_rows};

/// What [`evaluate`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    /// Mean cross-entropy per counted token.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Tokens the loss counted.
    pub tokens: usize,
    /// Share of examples whose every counted token is the model's most likely one (exact match
    /// under teacher forcing: accuracy for single-label answers such as `positive`/`negative`).
    pub accuracy: f64,
}

/// Evaluates `model` on `examples`, `batch_size` at a time, padded with `pad_id`.
pub fn evaluate<B: Backend>(model: &dyn CausalLm<B>, examples: &[Encoded], batch_size: usize, pad_id: u32, device: &B::Device) -> EvalResult {
    let (mut total, mut tokens, mut exact) = (0.0f64, 0usize, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let rows: Vec<Vec<&Encoded>> = chunk.iter().map(|e| vec![e]).collect();
        let batch = LmBatch::<B>::new(&rows, pad_id, device);
        let logits = model.logits(&batch.inputs, None);
        let predicted = logits.clone().argmax(2).squeeze_dim::<2>(2);
        let wrong = predicted.not_equal(batch.targets.clone()).float() * batch.weights.clone();
        let wrong_per_row = wrong.sum_dim(1).into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
        exact += wrong_per_row.iter().filter(|w| **w == 0.0).count();
        total += host_sum(lm_loss_rows(logits, batch.targets, batch.weights));
        tokens += batch.target_count;
    }
    let loss = total / tokens.max(1) as f64;
    EvalResult { loss, perplexity: loss.exp(), tokens, accuracy: exact as f64 / examples.len().max(1) as f64 }
}
