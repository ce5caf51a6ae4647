//! The learned gate of UniPELT (Mao et al., 2022), as AdapterHub builds it (`use_gating`): a
//! `d → 1` linear map of a method's input, `σ(·)` averaged over the sequence, multiplying the
//! method's contribution. One mechanism for every gated method.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;

/// A new gate over inputs of width `d`: weights N(0, 0.02) as BERT's linear layers (AdapterHub's
/// init), bias 0, so it starts near `σ(0) = 0.5`.
pub fn new_gate<B: Backend>(d: usize, device: &B::Device) -> Linear<B> {
    let mut gate = LinearConfig::new(d, 1).with_initializer(Initializer::Normal { mean: 0.0, std: 0.02 }).init(device);
    gate.bias = Some(Param::from_tensor(Tensor::zeros([1], device)));
    gate
}

/// The gate's value for input `h [batch, seq, ..., d]`: `σ(gate(h))` averaged over dimension 1
/// (the sequence), one value per example, `[batch, 1, ..., 1]`; for `[rows, d]`, one per row.
/// Every position of a sequence shares it, so in a decoder a gated method lets a position see
/// later ones: gating is for encoders.
pub fn gate_value<B: Backend, const D: usize>(gate: &Linear<B>, h: &Tensor<B, D>) -> Tensor<B, D> {
    let g = sigmoid(crate::linear_forward(gate, h.clone()));
    if D >= 3 { g.mean_dim(1) } else { g }
}
