//! The loss of next-token training: cross-entropy of each counted prediction.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// `Σ w·(−log p(target))` of each row, `[batch]`: sum them and divide by the number of counted
/// predictions (of the whole optimizer step, with gradient accumulation) for the token-weighted
/// mean. `logits [batch, seq, vocab]`, `targets [batch, seq]`, `weights [batch, seq]`.
pub fn lm_loss_rows<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_probs = log_softmax(logits, 2);
    let picked = log_probs.gather(2, targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
    (picked * weights).sum_dim(1).squeeze_dim::<1>(1).neg()
}

/// The sum of `rows` computed on the host in a fixed order, in f64: a reduction on the device may
/// order its additions differently from run to run (multi-threaded, SIMD), and a reported loss
/// must not change when nothing else does.
pub fn host_sum<B: Backend>(rows: Tensor<B, 1>) -> f64 {
    rows.into_data().convert::<f64>().into_vec::<f64>().unwrap_or_default().iter().sum()
}
