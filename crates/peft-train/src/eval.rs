//! Evaluation: the token-weighted mean loss over a whole data set, its perplexity, and how often
//! the model predicts every completion token; for a classifier, the mean loss per text and the
//! share of texts whose class the model picks.

use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;
use peft_core::Result;
use peft_models::{CausalLm, HfModel};
use peft_quant::backend::QuantLinearBackend;
use serde::Serialize;

use crate::loss::classification_loss_rows;
use crate::{ClsBatch, Encoded, LmBatch, host_sum, lm_loss_rows};

/// What [`evaluate`] measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    /// Mean cross-entropy per counted token.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// Tokens the loss counted (for a classifier: texts).
    pub tokens: usize,
    /// Share of examples whose every counted token is the model's most likely one (exact match
    /// under teacher forcing: accuracy for single-label answers such as `positive`/`negative`);
    /// for a classifier, the share of texts whose most likely class is their label.
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

/// Evaluates `model`'s classification head on `examples` (each with a label), `batch_size` at a
/// time: the mean cross-entropy per text, `exp` of it, the texts counted and the accuracy.
pub fn evaluate_classifier<B: QuantLinearBackend>(model: &HfModel<B>, examples: &[Encoded], batch_size: usize, pad_id: u32, device: &B::Device) -> Result<EvalResult> {
    let (mut total, mut right) = (0.0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = ClsBatch::<B>::new(&chunk.iter().collect::<Vec<_>>(), pad_id, device);
        let logits = model.classify(&batch.inputs)?;
        let predicted = logits.clone().argmax(1).squeeze_dim::<1>(1);
        right += predicted.equal(batch.labels.clone()).int().sum().into_scalar().elem::<i64>() as usize;
        total += host_sum(classification_loss_rows(logits, batch.labels));
    }
    let n = examples.len();
    let loss = total / n.max(1) as f64;
    Ok(EvalResult { loss, perplexity: loss.exp(), tokens: n, accuracy: right as f64 / n.max(1) as f64 })
}
