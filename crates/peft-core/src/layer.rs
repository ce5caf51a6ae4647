//! The layers a method can wrap: what they compute, and what kind of layer they are.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// What kind of layer a module is, for targeting (`all-linear`) and for choosing an adapter shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// A dense layer `x·W + b`.
    Linear,
    /// A lookup table.
    Embedding,
    /// A 2-D convolution.
    Conv2d,
    /// Attention keys and values, the site of prefix prompts.
    KeyValue,
    /// A model's input embeddings, the site of prompt tuning's virtual tokens.
    Prompt,
    /// A model's source of projected prefixes for every attention layer.
    PrefixProjection,
    /// Any other sub-layer (a block, a feed-forward network, an attention module).
    Other,
}

/// A layer with a forward pass from `I`: the base computation a method wraps.
pub trait Layer<B: Backend, I>: Module<B> + burn::module::ModuleDisplay {
    /// What the layer returns.
    type Output;
    /// The layer's own forward pass.
    fn forward_base(&self, input: I) -> Self::Output;
}

impl<B: Backend, const D: usize> Layer<B, Tensor<B, D>> for Linear<B> {
    type Output = Tensor<B, D>;
    /// `[..., d_in] -> [..., d_out]`
    fn forward_base(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        self.forward(input)
    }
}

impl<B: Backend> Layer<B, Tensor<B, 2, Int>> for Embedding<B> {
    type Output = Tensor<B, 3>;
    /// `[batch, seq] -> [batch, seq, d_model]`
    fn forward_base(&self, input: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward(input)
    }
}

impl<B: Backend> Layer<B, Tensor<B, 4>> for Conv2d<B> {
    type Output = Tensor<B, 4>;
    /// `[batch, c_in, h, w] -> [batch, c_out, h', w']`
    fn forward_base(&self, input: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward(input)
    }
}
