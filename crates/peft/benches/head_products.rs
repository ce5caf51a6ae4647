//! The loss head's three products on burn-ndarray, Burn's `matmul` against `strided_matmul`
//! (the `gemm` crate reading the operands where they lie), in one run.
//!
//! ```text
//! cargo bench -p peft --bench head_products
//! ```
//!
//! Shapes: one chunk of `peft_train::lm_loss` at vocabulary 32000 (524 tokens, hidden 256):
//! logits `h·W`, the hidden states' gradient `∂logits·Wᵀ` and the head's `hᵀ·∂logits`, with `h`
//! a narrowed view of the batch's hidden states, as in the loss. The allocator is the training
//! loop's (mimalloc keeping freed memory), so outputs are not faulted in afresh each time.

use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Distribution, Tensor};
use criterion::Criterion;
use peft::quant::fused::strided_matmul;

#[global_allocator]
static ALLOCATOR: peft_train::allocator::Allocator = peft_train::allocator::Allocator;

const TOKENS: usize = 1024;
const CHUNK: usize = 524;
const WIDTH: usize = 256;
const VOCAB: usize = 32000;

fn main() {
    peft_train::allocator::keep_freed_memory();
    let device = Default::default();
    let random = |rows, cols| Tensor::<NdArray, 2>::random([rows, cols], Distribution::Normal(0.0, 1.0), &device);
    let (hidden, head, grad_logits) = (random(TOKENS, WIDTH), random(WIDTH, VOCAB), random(CHUNK, VOCAB));
    let head_t = head.clone().transpose().reshape([VOCAB, WIDTH]);
    let h = || hidden.clone().narrow(0, 100, CHUNK);
    let mut c = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6)).configure_from_args();
    c.bench_function("head_logits_matmul", |b| b.iter(|| h().matmul(head.clone())));
    c.bench_function("head_logits_strided", |b| b.iter(|| strided_matmul(h(), head.clone())));
    c.bench_function("head_grad_hidden_matmul", |b| b.iter(|| grad_logits.clone().matmul(head_t.clone())));
    c.bench_function("head_grad_hidden_strided", |b| b.iter(|| strided_matmul(grad_logits.clone(), head_t.clone())));
    c.bench_function("head_grad_head_matmul", |b| b.iter(|| h().transpose().matmul(grad_logits.clone())));
    c.bench_function("head_grad_head_strided", |b| b.iter(|| strided_matmul(h().transpose(), grad_logits.clone())));
    c.final_summary();
}
