//! [`BaseLinear`]: a model's linear layer, dense or 4-bit, so that one model definition trains
//! LoRA on a dense base or, quantized after loading, on a 4-bit one (QLoRA).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Adaptable, Layer, LayerKind, linear_forward};

use crate::backend::QuantLinearBackend;
use crate::{QLinear, QuantConfig, Result};

/// A linear layer whose weight is dense or quantized to 4 bits.
// Unboxed: Burn's derive needs each variant to be a module; a model holds one per linear layer.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum BaseLinear<B: Backend> {
    /// A dense `Linear`.
    Dense(Linear<B>),
    /// A 4-bit `QLinear` (frozen).
    Quantized(QLinear<B>),
}

impl<B: Backend> From<Linear<B>> for BaseLinear<B> {
    fn from(linear: Linear<B>) -> Self {
        Self::Dense(linear)
    }
}

impl<B: Backend> BaseLinear<B> {
    /// `[d_input, d_output]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Dense(l) => l.weight.dims(),
            Self::Quantized(q) => [q.meta.d_input, q.meta.d_output],
        }
    }

    /// The dense layer, unless quantized.
    pub fn dense(&self) -> Option<&Linear<B>> {
        match self {
            Self::Dense(l) => Some(l),
            Self::Quantized(_) => None,
        }
    }

    /// Quantizes a dense layer in place (a quantized one stays as it is).
    pub fn quantize(&mut self, config: QuantConfig) -> Result<()> {
        if let Self::Dense(l) = self {
            *self = Self::Quantized(QLinear::from_linear(l, config)?);
        }
        Ok(())
    }
}

impl<B: QuantLinearBackend, const D: usize> Layer<B, Tensor<B, D>> for BaseLinear<B> {
    type Output = Tensor<B, D>;
    /// `[..., d_in] -> [..., d_out]`
    fn forward_base(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Dense(l) => linear_forward(l, input),
            Self::Quantized(q) => q.forward(input),
        }
    }
}

impl<B: Backend> Adaptable<B> for BaseLinear<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }
    fn output_features(&self) -> Option<usize> {
        Some(self.dims()[1])
    }
}
