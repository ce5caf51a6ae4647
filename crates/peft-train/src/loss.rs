//! The losses of training: cross-entropy of each counted next-token prediction, or of each
//! text's class.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use peft_core::Result;
use peft_models::{CausalLm, HeadInput, HfModel};
use peft_quant::fused::{FusedOps, fused_cross_entropy, strided_matmul};

use crate::{ClsBatch, LmBatch};

/// Logits the fused loss holds at once: 2^24 values (64 MiB in f32), so a chunk is
/// `2^24 / vocab` tokens (512 at a vocabulary of 32,768). Smaller chunks cost time on
/// burn-ndarray, which copies both operands of every product (docs/benchmarks.md: 2^22 took
/// 0.59 s a step where 2^24 took 0.49 s and the whole logits 0.46–0.49 s).
const CHUNK_LOGITS: usize = 1 << 24;

/// `Σ w·(−log p(target))` of each row, `[batch]`: sum them and divide by the number of counted
/// predictions (of the whole optimizer step, with gradient accumulation) for the token-weighted
/// mean. `logits [batch, seq, vocab]`, `targets [batch, seq]`, `weights [batch, seq]`.
pub fn lm_loss_rows<B: Backend>(logits: Tensor<B, 3>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> Tensor<B, 1> {
    let log_probs = log_softmax(logits, 2);
    let picked = log_probs.gather(2, targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
    (picked * weights).sum_dim(1).squeeze_dim::<1>(1).neg()
}

/// `−log p(label)` of each row of `logits [batch, classes]`, `[batch]`.
pub fn classification_loss_rows<B: Backend>(logits: Tensor<B, 2>, labels: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    log_softmax(logits, 1).gather(1, labels.unsqueeze_dim::<2>(1)).squeeze_dim::<1>(1).neg()
}

/// The classification loss of `batch` under `model`'s head, summed over its rows (divide by
/// the texts of the optimizer step for the mean, as transformers' `CrossEntropyLoss`).
pub fn classification_loss<B: AutodiffBackend + peft_quant::backend::QuantLinearBackend>(model: &HfModel<B>, batch: &ClsBatch<B>) -> Result<LmLoss<B>> {
    let rows = classification_loss_rows(model.classify(&batch.inputs)?, batch.labels.clone());
    Ok(LmLoss { value: host_sum(rows.clone().inner()), sum: rows.sum() })
}

/// The sum of `rows` computed on the host in a fixed order, in f64: a reduction on the device may
/// order its additions differently from run to run (multi-threaded, SIMD), and a reported loss
/// must not change when nothing else does.
pub fn host_sum<B: Backend>(rows: Tensor<B, 1>) -> f64 {
    rows.into_data().convert::<f64>().into_vec::<f64>().unwrap_or_default().iter().sum()
}

/// The loss of a batch, summed over its counted predictions (tokens, or classified texts).
#[derive(Debug)]
pub struct LmLoss<B: AutodiffBackend> {
    /// `Σ w·(−log p(target))`, a scalar `[1]` to divide by the counted predictions and call
    /// `backward` on.
    pub sum: Tensor<B, 1>,
    /// The same sum added on the host in a fixed order, in f64 (what the loop reports).
    pub value: f64,
}

/// The next-token loss of `batch` under `model`. When the model's head is a plain weight
/// ([`CausalLm::hidden_and_head`]) the logits are computed 2^24 values at a time and the
/// gradients of the hidden states and of the head (when it trains) with them, so the full
/// `[tokens, vocab]` logits and their gradient never exist at once (the idea of Liger-Kernel's
/// fused linear cross-entropy); otherwise the model's logits go through [`lm_loss_rows`].
pub fn lm_loss<B: AutodiffBackend + FusedOps>(model: &dyn CausalLm<B>, batch: &LmBatch<B>) -> LmLoss<B> {
    match model.hidden_and_head(&batch.inputs) {
        Some(head) => fused_lm_loss(head, batch.targets.clone(), batch.weights.clone()),
        None => LmLoss::from_logits(model.logits(&batch.inputs, None), batch),
    }
}

impl<B: AutodiffBackend> LmLoss<B> {
    /// The loss of `batch` from the model's whole logits `[batch, seq, vocab]`, through
    /// [`lm_loss_rows`].
    pub fn from_logits(logits: Tensor<B, 3>, batch: &LmBatch<B>) -> Self {
        let rows = lm_loss_rows(logits, batch.targets.clone(), batch.weights.clone());
        Self { value: host_sum(rows.clone().inner()), sum: rows.sum() }
    }
}

/// [`lm_loss`] from the input of the head (the final hidden states and the head's weight;
/// targets and weights `[batch, seq]`): the loss of each chunk of tokens and, for the parameters that train, its
/// gradient (`∂/∂logits = w·(softmax − onehot(target))`, then through the head's product) are
/// computed without autodiff; the returned sum is that value plus `Σ h·∂h − detach(Σ h·∂h)` (and
/// the same for the head), which is zero but gives autodiff exactly those gradients.
pub fn fused_lm_loss<B: AutodiffBackend + FusedOps>(head: HeadInput<B>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> LmLoss<B> {
    let chunk = CHUNK_LOGITS / head.weight.dims()[1].max(1);
    fused_lm_loss_in_chunks(head, targets, weights, chunk)
}

/// [`fused_lm_loss`], `chunk` tokens at a time.
fn fused_lm_loss_in_chunks<B: AutodiffBackend + FusedOps>(head: HeadInput<B>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>, chunk: usize) -> LmLoss<B> {
    let HeadInput { hidden, weight: head, weight_trains: want_head } = head;
    let [batch, seq, width] = hidden.dims();
    let vocab = head.dims()[1];
    let tokens = batch * seq;
    let hidden = hidden.reshape([tokens, width]);
    // The head in each orientation the products need, made contiguous once (a backend may copy
    // a transposed operand in every product, and a tied head is the embeddings transposed).
    let (h, w) = (hidden.clone().inner(), head.clone().inner().reshape([width, vocab]));
    let w_t = w.clone().transpose().reshape([vocab, width]);
    let (targets, weights) = (targets.inner().reshape([tokens, 1]), weights.inner().reshape([tokens, 1]));
    let chunk = chunk.clamp(1, tokens.max(1));

    let mut losses = Vec::with_capacity(tokens);
    let (mut grad_hidden, mut grad_head) = (Vec::new(), None);
    for start in (0..tokens).step_by(chunk) {
        let len = chunk.min(tokens - start);
        let h = h.clone().narrow(0, start, len);
        let (target, weight) = (targets.clone().narrow(0, start, len), weights.clone().narrow(0, start, len));
        // Products on untracked tensors of `B`: `strided_matmul` reads the narrowed and
        // transposed operands in place where the backend can.
        let h = Tensor::<B, 2>::from_inner(h);
        let logits = strided_matmul(h.clone(), Tensor::from_inner(w.clone()));
        let (loss, grad_logits) = fused_cross_entropy(logits, Tensor::from_inner(target), Tensor::from_inner(weight));
        losses.extend(loss.inner().into_data().convert::<f64>().into_vec::<f64>().unwrap_or_default());
        grad_hidden.push(strided_matmul(grad_logits.clone(), Tensor::from_inner(w_t.clone())).inner());
        if want_head {
            let part = strided_matmul(h.transpose(), grad_logits).inner();
            grad_head = Some(match grad_head {
                Some(sum) => sum + part,
                None => part,
            });
        }
    }
    let value: f64 = losses.iter().sum();
    let device = hidden.device();
    let mut sum = Tensor::<B, 1>::from_floats([value as f32], &device);
    let mut route = |param: Tensor<B, 2>, grad: Tensor<B::InnerBackend, 2>| {
        let dot = (param * Tensor::from_inner(grad)).sum();
        sum = sum.clone() + dot.clone() - dot.detach();
    };
    // The hidden states come out of trained layers (or adapters) in every training setup.
    route(hidden, Tensor::cat(grad_hidden, 0));
    if let Some(grad) = grad_head {
        route(head, grad);
    }
    LmLoss { sum, value }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{Distribution, TensorData, Tolerance};

    use super::*;

    type B = Autodiff<NdArray>;

    /// The fused loss and the gradients it gives equal those of the whole logits through
    /// `log_softmax`, for chunks that do and do not divide the tokens, with the head trained or
    /// frozen, and with uncounted predictions (weight 0).
    #[test]
    fn fused_loss_and_gradients_equal_the_whole_logits() {
        let device = Default::default();
        let (batch, seq, width, vocab) = (2, 5, 8, 11);
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new((0..10).map(|i| (i * 7 % 11) as i64).collect::<Vec<_>>(), [batch, seq]), &device);
        let weights = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0], [batch, seq]), &device);
        let hidden = Tensor::<B, 3>::random([batch, seq, width], Distribution::Normal(0.0, 1.0), &device);
        let head = Tensor::<B, 2>::random([width, vocab], Distribution::Normal(0.0, 1.0), &device);
        for train_head in [true, false] {
            for chunk in [1, 3, 4, 10, 64] {
                let run = |fused: bool| {
                    let (h, w) = (hidden.clone().detach().require_grad(), head.clone().detach().set_require_grad(train_head));
                    let (sum, value) = if fused {
                        let head = HeadInput { hidden: h.clone(), weight: w.clone(), weight_trains: train_head };
                        let loss = fused_lm_loss_in_chunks(head, targets.clone(), weights.clone(), chunk);
                        (loss.sum, loss.value)
                    } else {
                        let rows = lm_loss_rows(h.clone().matmul(w.clone().unsqueeze()), targets.clone(), weights.clone());
                        (rows.clone().sum(), host_sum(rows.inner()))
                    };
                    let grads = sum.clone().backward();
                    (sum.into_scalar(), value, h.grad(&grads).map(|g| g.into_data()), w.grad(&grads).map(|g| g.into_data()))
                };
                let (fused, whole) = (run(true), run(false));
                assert!((fused.0 - whole.0).abs() < 1e-4 && (fused.1 - whole.1).abs() < 1e-4, "loss {:?} vs {:?}", (fused.0, fused.1), (whole.0, whole.1));
                fused.2.expect("hidden gradient").assert_approx_eq::<f32>(&whole.2.expect("hidden gradient"), Tolerance::absolute(1e-5));
                match (fused.3, whole.3) {
                    (Some(f), Some(w)) => f.assert_approx_eq::<f32>(&w, Tolerance::absolute(1e-5)),
                    (None, None) => assert!(!train_head),
                    other => panic!("head gradient on one side only: {other:?}"),
                }
            }
        }
    }
}
