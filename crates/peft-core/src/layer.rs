//! The layers a method can wrap: what they compute, and what kind of layer they are.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, LayerNorm, Linear};
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
    /// Where a residual sub-layer ends: the add `h + r` of a pre-norm model ([`ResidualAdd`]),
    /// or the norm after it, `norm(h + r)`, of a post-norm one (where AdapterHub's bottleneck
    /// adapters sit).
    Residual,
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
    /// `[..., d_in] -> [..., d_out]` ([`linear_forward`](crate::linear_forward)).
    fn forward_base(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        crate::linear_forward(self, input)
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

/// The input of the step that closes a residual sub-layer (Llama's and GPT-2's add `h + r`,
/// BERT's `LayerNorm(h + r)`): the sub-layer's output `h` and its residual input `r`, both
/// `[..., d]`.
#[derive(Clone, Debug)]
pub struct Residual<B: Backend, const D: usize> {
    /// The sub-layer's output (after its last projection).
    pub hidden: Tensor<B, D>,
    /// The sub-layer's input, added back by the residual connection.
    pub residual: Tensor<B, D>,
}

impl<B: Backend, const D: usize> Layer<B, Residual<B, D>> for LayerNorm<B> {
    type Output = Tensor<B, D>;
    /// `norm(h + r)`: `[..., d] -> [..., d]`
    fn forward_base(&self, input: Residual<B, D>) -> Tensor<B, D> {
        self.forward(input.hidden + input.residual)
    }
}

/// The add that closes a pre-norm residual sub-layer, `h + r` (Llama, GPT-2). It has no
/// parameters; it knows its width and device so that adapters can be built on it (moving the
/// model to another device does not move that device: build it, or add its adapters, where the
/// model runs).
#[derive(Module, Debug)]
pub struct ResidualAdd<B: Backend> {
    /// The width `d` of `h` and `r`.
    #[module(skip)]
    pub width: usize,
    #[module(skip)]
    pub(crate) home: B::Device,
    phantom: core::marker::PhantomData<B>,
}

impl<B: Backend> ResidualAdd<B> {
    /// The add for `[..., width]` tensors on `device`.
    pub fn new(width: usize, device: &B::Device) -> Self {
        Self { width, home: device.clone(), phantom: core::marker::PhantomData }
    }
}

impl<B: Backend, const D: usize> Layer<B, Residual<B, D>> for ResidualAdd<B> {
    type Output = Tensor<B, D>;
    /// `h + r`: `[..., d] -> [..., d]`
    fn forward_base(&self, input: Residual<B, D>) -> Tensor<B, D> {
        input.hidden + input.residual
    }
}
