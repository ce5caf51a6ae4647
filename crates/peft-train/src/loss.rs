//! The loss of next-token training: cross-entropy of each counted prediction.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// `Σ w·(−log p(target))` over the batch, `[1]`: divide by the number of counted predictions (of
/// the whole optimizer step, with gradient accumulation) for the token-weighted mean.
/// `logits [batch, seq, vocab]`, `targets [batch, seq]`, `weights [batch, seq]`.
pub fn lm_loss_sum<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_probs = log_softmax(logits, 2);
    let picked = log_probs.gather(2, targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
    (picked * weights).sum().neg()
}
