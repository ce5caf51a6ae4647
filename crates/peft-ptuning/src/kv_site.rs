//! The key/value site: the point in an attention layer where prefixes attach.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Adaptable, Layer, LayerKind};

/// The point in an attention layer where keys and values exist after projection, per head.
/// Without a prefix it passes them through unchanged.
#[derive(Module, Clone, Debug)]
pub struct KvSite {
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: Backend> Layer<B, (Tensor<B, 4>, Tensor<B, 4>)> for KvSite {
    type Output = (Tensor<B, 4>, Tensor<B, 4>);
    /// Identity on `(keys, values)`, each `[batch, kv_heads, seq, head_dim]`.
    fn forward_base(&self, input: (Tensor<B, 4>, Tensor<B, 4>)) -> Self::Output {
        input
    }
}

impl<B: Backend> Adaptable<B> for KvSite {
    fn kind(&self) -> LayerKind {
        LayerKind::KeyValue
    }
}
