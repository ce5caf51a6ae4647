//! Batches for next-token training: the model's input and, at each position, the token to
//! predict and whether that prediction counts in the loss. Rows hold one example, padded, or
//! several, packed, with attention kept inside each example; and batches of texts to classify.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use peft_models::{Padding, TokenBatch};

use crate::Encoded;

/// A batch for next-token training.
#[derive(Clone, Debug)]
pub struct LmBatch<B: Backend> {
    /// What the model reads.
    pub inputs: TokenBatch<B>,
    /// The token each position should predict `[batch, seq]` (padding where nothing is).
    pub targets: Tensor<B, 2, Int>,
    /// 1 where the prediction counts in the loss, 0 elsewhere `[batch, seq]`.
    pub weights: Tensor<B, 2>,
    /// Predictions that count.
    pub target_count: usize,
}

impl<B: Backend> LmBatch<B> {
    /// Rows of one or more examples (several: packed), padded on the right with `pad_id`.
    pub fn new(rows: &[Vec<&Encoded>], pad_id: u32, device: &B::Device) -> Self {
        let seqs: Vec<Vec<&[u32]>> = rows.iter().map(|r| r.iter().map(|e| e.ids.as_slice()).collect()).collect();
        let inputs = TokenBatch::new(&seqs, pad_id, Padding::Right, device);
        let [batch, len] = inputs.dims();
        let (mut targets, mut weights) = (Vec::with_capacity(batch * len), Vec::with_capacity(batch * len));
        for row in rows {
            let used: usize = row.iter().map(|e| e.ids.len()).sum();
            for example in row {
                for i in 0..example.ids.len() {
                    let next = example.ids.get(i + 1);
                    targets.push(i64::from(*next.unwrap_or(&pad_id)));
                    weights.push(if next.is_some() && example.targets[i + 1] { 1.0f32 } else { 0.0 });
                }
            }
            targets.extend(std::iter::repeat_n(i64::from(pad_id), len - used));
            weights.extend(std::iter::repeat_n(0.0, len - used));
        }
        let target_count = weights.iter().filter(|w| **w > 0.0).count();
        Self {
            inputs,
            targets: Tensor::from_data(TensorData::new(targets, [batch, len]), device),
            weights: Tensor::from_data(TensorData::new(weights, [batch, len]), device),
            target_count,
        }
    }
}

/// A batch for sequence classification: one text per row, padded on the right, and its class.
#[derive(Clone, Debug)]
pub struct ClsBatch<B: Backend> {
    /// What the model reads.
    pub inputs: TokenBatch<B>,
    /// The class of each row `[batch]`.
    pub labels: Tensor<B, 1, Int>,
}

impl<B: Backend> ClsBatch<B> {
    /// `examples` (each with a label) padded with `pad_id`; an example without a label counts as
    /// class 0.
    pub fn new(examples: &[&Encoded], pad_id: u32, device: &B::Device) -> Self {
        let seqs: Vec<Vec<&[u32]>> = examples.iter().map(|e| vec![e.ids.as_slice()]).collect();
        let labels: Vec<i64> = examples.iter().map(|e| e.label.unwrap_or(0) as i64).collect();
        Self { inputs: TokenBatch::new(&seqs, pad_id, Padding::Right, device), labels: Tensor::from_data(TensorData::new(labels, [examples.len()]), device) }
    }
}

/// Groups `examples` (by index) into rows: one example per row, or, with `pack_to`, as many as
/// fit in that many tokens (an example longer than that gets a row of its own).
pub fn rows(examples: &[Encoded], order: &[usize], pack_to: Option<usize>) -> Vec<Vec<usize>> {
    let Some(limit) = pack_to else { return order.iter().map(|&i| vec![i]).collect() };
    let mut rows: Vec<Vec<usize>> = Vec::new();
    let mut used = 0;
    for &i in order {
        let len = examples[i].ids.len();
        match rows.last_mut() {
            Some(row) if used + len <= limit => {
                row.push(i);
                used += len;
            }
            _ => {
                rows.push(vec![i]);
                used = len;
            }
        }
    }
    rows
}
