//! Prompt tuning's adapter: learned embeddings of virtual tokens that precede the input, through
//! P-Tuning's MLP when it has one.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{Result, Tuner, TunerForward, trainable};

use crate::{PromptSite, PromptTuningConfig};

/// P-Tuning's encoder: `output(relu(hidden(relu(input(x)))))`.
#[derive(Module, Debug)]
pub struct PromptMlp<B: Backend> {
    /// `d -> h`.
    pub input: Linear<B>,
    /// `h -> h`.
    pub hidden: Linear<B>,
    /// `h -> d`.
    pub output: Linear<B>,
}

impl<B: Backend> PromptMlp<B> {
    /// `[n, d] -> [n, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.output.forward(relu(self.hidden.forward(relu(self.input.forward(x)))))
    }
}

/// Learned virtual-token embeddings `[num_virtual_tokens, token_dim]`, and P-Tuning's encoder.
#[derive(Module, Debug)]
pub struct PromptEmbedding<B: Backend> {
    /// The embeddings.
    pub embeddings: Param<Tensor<B, 2>>,
    /// P-Tuning's MLP; the virtual tokens are its output.
    pub encoder: Option<PromptMlp<B>>,
}

impl<B: Backend> PromptEmbedding<B> {
    /// The virtual tokens `[num_virtual_tokens, token_dim]`: the embeddings, through the encoder
    /// when there is one.
    pub fn virtual_tokens(&self) -> Tensor<B, 2> {
        match &self.encoder {
            Some(encoder) => encoder.forward(self.embeddings.val()),
            None => self.embeddings.val(),
        }
    }

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
        let (d, device) = (base.token_dim, Default::default());
        let embeddings = trainable(Tensor::random([config.num_virtual_tokens, d], Distribution::Normal(0.0, config.init_std), &device));
        let encoder = config.encoder.as_ref().map(|e| {
            let h = e.hidden_size.unwrap_or(d);
            PromptMlp { input: LinearConfig::new(d, h).init(&device), hidden: LinearConfig::new(h, h).init(&device), output: LinearConfig::new(h, d).init(&device) }
        });
        Ok(Self { embeddings, encoder })
    }

    fn method(&self) -> &'static str {
        if self.encoder.is_some() { "P_TUNING" } else { "PROMPT_TUNING" }
    }
}

impl<B: Backend> TunerForward<B, PromptSite, Tensor<B, 3>> for PromptEmbedding<B> {
    /// Prepends the virtual tokens: `[batch, seq, d] -> [batch, nvt + seq, d]` (HF peft's
    /// `cat(prompts, inputs_embeds)`).
    fn post(&self, _base: &PromptSite, _input: &Tensor<B, 3>, output: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, _, d] = output.dims();
        let prompt = self.virtual_tokens().to_device(&output.device()).unsqueeze_dim::<3>(0).expand([batch, self.len(), d]);
        Tensor::cat(vec![prompt, output], 1)
    }
}
