//! The key/value site: the point in an attention layer where prefixes attach.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Adaptable, Layer, LayerKind, Rows};

/// The point in an attention layer where keys and values exist after projection, per head.
/// Without a prefix it passes them through unchanged.
#[derive(Module, Clone, Debug)]
pub struct KvSite {
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the attention layer's input (what a gated prefix's gate reads).
    pub input_dim: usize,
}

/// What an attention layer hands its key/value site.
#[derive(Clone, Debug)]
pub struct AttentionKv<B: Backend> {
    /// Keys after projection, `[batch, kv_heads, seq, head_dim]`.
    pub keys: Tensor<B, 4>,
    /// Values after projection, `[batch, kv_heads, seq, head_dim]`.
    pub values: Tensor<B, 4>,
    /// The attention layer's input `[batch, seq, input_dim]` (AdapterHub's `residual_input`).
    pub input: Tensor<B, 3>,
}

impl<B: Backend> AttentionKv<B> {
    /// Keys and values with the layer input `input` they were projected from.
    pub fn new(keys: Tensor<B, 4>, values: Tensor<B, 4>, input: Tensor<B, 3>) -> Self {
        Self { keys, values, input }
    }
}

impl<B: Backend> Rows for AttentionKv<B> {
    fn batch(&self) -> usize {
        self.keys.dims()[0]
    }

    fn take_rows(self, other: Self, mask: &[bool]) -> Self {
        Self { keys: self.keys.take_rows(other.keys, mask), values: self.values.take_rows(other.values, mask), input: self.input.take_rows(other.input, mask) }
    }
}

impl<B: Backend> Layer<B, AttentionKv<B>> for KvSite {
    type Output = (Tensor<B, 4>, Tensor<B, 4>);
    /// `(keys, values)`, each `[batch, kv_heads, seq, head_dim]`, unchanged.
    fn forward_base(&self, input: AttentionKv<B>) -> Self::Output {
        (input.keys, input.values)
    }
}

impl<B: Backend> Adaptable<B> for KvSite {
    fn kind(&self) -> LayerKind {
        LayerKind::KeyValue
    }
}
