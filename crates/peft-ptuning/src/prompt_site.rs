//! The prompt site: a decoder's input embeddings, where prompt tuning's virtual tokens go.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Adaptable, Layer, LayerKind};

/// The point where a model has embedded its tokens. Without a prompt it passes the embeddings
/// through unchanged; a [`crate::PromptEmbedding`] puts its virtual tokens before them.
#[derive(Module, Clone, Debug)]
pub struct PromptSite {
    /// Width of one embedding.
    pub token_dim: usize,
}

impl<B: Backend> Layer<B, Tensor<B, 3>> for PromptSite {
    type Output = Tensor<B, 3>;
    /// Identity on the embeddings `[batch, seq, token_dim]`.
    fn forward_base(&self, input: Tensor<B, 3>) -> Tensor<B, 3> {
        input
    }
}

impl<B: Backend> Adaptable<B> for PromptSite {
    fn kind(&self) -> LayerKind {
        LayerKind::Prompt
    }
}
