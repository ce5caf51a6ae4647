//! Prompt tuning's adapter: learned embeddings of virtual tokens that precede the input, through
//! P-Tuning's encoder (an MLP or an LSTM) when it has one.

use burn::module::{Module, Param};
use burn::nn::{BiLstm, BiLstmConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{Result, Tuner, TunerForward, trainable};

use crate::{PromptEncoderConfig, PromptEncoderKind, PromptSite, PromptTuningConfig};

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

/// P-Tuning's LSTM encoder: `mlp_out(relu(mlp_in(lstm(x))))`, the LSTM bidirectional over the
/// virtual tokens as one sequence (peft's `lstm_head` and `mlp_head`).
#[derive(Module, Debug)]
pub struct PromptLstm<B: Backend> {
    /// Bidirectional layers: `d -> 2h`, then `2h -> 2h`.
    pub layers: Vec<BiLstm<B>>,
    /// `2h -> 2h`.
    pub mlp_in: Linear<B>,
    /// `2h -> d`.
    pub mlp_out: Linear<B>,
}

impl<B: Backend> PromptLstm<B> {
    /// `[n, d] -> [n, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self.layers.iter().fold(x.unsqueeze_dim::<3>(0), |h, layer| layer.forward(h, None).0).squeeze_dim::<2>(0);
        self.mlp_out.forward(relu(self.mlp_in.forward(h)))
    }
}

/// P-Tuning's encoder.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum PromptEncoder<B: Backend> {
    /// Three linear layers.
    Mlp(PromptMlp<B>),
    /// A bidirectional LSTM and two linear layers.
    Lstm(PromptLstm<B>),
}

impl<B: Backend> PromptEncoder<B> {
    /// The encoder `config` describes for tokens of width `d`.
    pub fn new(config: &PromptEncoderConfig, d: usize, device: &B::Device) -> Self {
        let h = config.hidden_size.unwrap_or(d);
        match config.kind {
            PromptEncoderKind::Mlp => Self::Mlp(PromptMlp { input: LinearConfig::new(d, h).init(device), hidden: LinearConfig::new(h, h).init(device), output: LinearConfig::new(h, d).init(device) }),
            PromptEncoderKind::Lstm => Self::Lstm(PromptLstm {
                layers: (0..config.num_layers).map(|i| BiLstmConfig::new(if i == 0 { d } else { 2 * h }, h, true).init(device)).collect(),
                mlp_in: LinearConfig::new(2 * h, 2 * h).init(device),
                mlp_out: LinearConfig::new(2 * h, d).init(device),
            }),
        }
    }

    /// `[n, d] -> [n, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Mlp(m) => m.forward(x),
            Self::Lstm(l) => l.forward(x),
        }
    }
}

/// Learned virtual-token embeddings `[num_virtual_tokens, token_dim]`, and P-Tuning's encoder.
#[derive(Module, Debug)]
pub struct PromptEmbedding<B: Backend> {
    /// The embeddings.
    pub embeddings: Param<Tensor<B, 2>>,
    /// P-Tuning's encoder; the virtual tokens are its output.
    pub encoder: Option<PromptEncoder<B>>,
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
        let encoder = config.encoder.as_ref().map(|e| PromptEncoder::new(e, d, &device));
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
