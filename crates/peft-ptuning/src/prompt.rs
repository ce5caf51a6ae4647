//! Prompt tuning's adapter: learned embeddings of virtual tokens that precede the input.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{Result, Tuner, TunerForward, trainable};

use crate::{PromptSite, PromptTuningConfig};

/// Learned virtual-token embeddings `[num_virtual_tokens, token_dim]`.
#[derive(Module, Debug)]
pub struct PromptEmbedding<B: Backend> {
    /// The embeddings.
    pub embeddings: Param<Tensor<B, 2>>,
}

impl<B: Backend> PromptEmbedding<B> {
    /// Number of virtual tokens.
    pub fn len(&self) -> usize {
        self.embeddings.dims()[0]
    }

    /// Whether the prompt has no tokens (never true for a built prompt).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Tuner<B, PromptSite> for PromptEmbedding<B> {
    type Config = PromptTuningConfig;

    fn init(config: &PromptTuningConfig, base: &mut PromptSite, _path: &str) -> Result<Self> {
        let shape = [config.num_virtual_tokens, base.token_dim];
        Ok(Self { embeddings: trainable(Tensor::random(shape, Distribution::Normal(0.0, config.init_std), &Default::default())) })
    }

    fn method(&self) -> &'static str {
        "PROMPT_TUNING"
    }
}

impl<B: Backend> TunerForward<B, PromptSite, Tensor<B, 3>> for PromptEmbedding<B> {
    /// Prepends the virtual tokens: `[batch, seq, d] -> [batch, nvt + seq, d]` (HF peft's
    /// `cat(prompts, inputs_embeds)`).
    fn post(&self, _base: &PromptSite, _input: &Tensor<B, 3>, output: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, _, d] = output.dims();
        let prompt = self.embeddings.val().to_device(&output.device()).unsqueeze_dim::<3>(0).expand([batch, self.len(), d]);
        Tensor::cat(vec![prompt, output], 1)
    }
}
