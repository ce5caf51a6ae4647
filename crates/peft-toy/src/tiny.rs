//! A small pre-norm transformer classifier whose every linear layer, embedding, feed-forward
//! sub-layer and key/value site can carry adapters.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use peft_adapter::AdaptedSublayer;
use peft_core::{Layer, Tuned};
use peft_lora::{LoraEmbedding, LoraLinear};
use peft_models::TokenBatch;
use peft_models::attention::{attend, split_heads};
use peft_ptuning::{AttentionKv, KvSite, PrefixKv};
use peft_quant::fused::FusedOps;

/// Sizes of a [`TinyTransformer`].
#[derive(Config, Debug)]
pub struct TinyTransformerConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence.
    pub max_len: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Model width.
    #[config(default = 32)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Blocks.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Feed-forward width.
    #[config(default = 64)]
    pub d_ff: usize,
}

/// Multi-head self-attention with LoRA-able projections and a prefix-able key/value site.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection.
    pub q: LoraLinear<B>,
    /// Key projection.
    pub k: LoraLinear<B>,
    /// Value projection.
    pub v: LoraLinear<B>,
    /// Output projection.
    pub o: LoraLinear<B>,
    /// Keys and values after projection, where prefixes attach.
    pub kv: PrefixKv<B>,
    /// Heads.
    pub n_heads: usize,
}
peft_core::adaptable!(Attention { q, k, v, o, kv });

impl<B: FusedOps> Attention<B> {
    /// `[batch, seq, d_model] -> [batch, seq, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let heads = |t: Tensor<B, 3>| split_heads(t, self.n_heads);
        let q = heads(self.q.forward(x.clone()));
        let (k, v) = self.kv.forward(AttentionKv::new(heads(self.k.forward(x.clone())), heads(self.v.forward(x.clone())), x));
        self.o.forward(attend(q, k, v, None))
    }
}

/// The feed-forward network `down(gelu(up(x)))`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `d_model -> d_ff`.
    pub up: LoraLinear<B>,
    /// `d_ff -> d_model`.
    pub down: LoraLinear<B>,
}
peft_core::adaptable!(FeedForward { up, down }, output = down);

impl<B: Backend> Layer<B, Tensor<B, 3>> for FeedForward<B> {
    type Output = Tensor<B, 3>;
    /// `[batch, seq, d_model] -> [batch, seq, d_model]`.
    fn forward_base(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down.forward(gelu(self.up.forward(x)))
    }
}

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Attention.
    pub attn: Attention<B>,
    /// Norm before attention.
    pub norm1: LayerNorm<B>,
    /// Feed-forward sub-layer, where bottleneck adapters attach.
    pub ffn: AdaptedSublayer<B, FeedForward<B>>,
    /// Norm before the feed-forward.
    pub norm2: LayerNorm<B>,
}
peft_core::adaptable!(Block { attn, ffn });

/// A small transformer classifier: embeddings, blocks, mean pooling, a linear head.
#[derive(Module, Debug)]
pub struct TinyTransformer<B: Backend> {
    /// Token embeddings.
    pub embed: LoraEmbedding<B>,
    /// Learned positions.
    pub position: Embedding<B>,
    /// The blocks.
    pub blocks: Vec<Block<B>>,
    /// Final norm.
    pub norm: LayerNorm<B>,
    /// Classifier head (train it in full with `modules_to_save = ["head"]`).
    pub head: Linear<B>,
}
peft_core::adaptable!(TinyTransformer { embed, blocks });

impl TinyTransformerConfig {
    /// Builds the model with random weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TinyTransformer<B> {
        let d = self.d_model;
        let linear = |i, o| Tuned::new(LinearConfig::new(i, o).init(device));
        let blocks = (0..self.n_layers)
            .map(|_| Block {
                attn: Attention {
                    q: linear(d, d),
                    k: linear(d, d),
                    v: linear(d, d),
                    o: linear(d, d),
                    kv: Tuned::new(KvSite { kv_heads: self.n_heads, head_dim: d / self.n_heads, input_dim: d }),
                    n_heads: self.n_heads,
                },
                norm1: LayerNormConfig::new(d).init(device),
                ffn: Tuned::new(FeedForward { up: linear(d, self.d_ff), down: linear(self.d_ff, d) }),
                norm2: LayerNormConfig::new(d).init(device),
            })
            .collect();
        TinyTransformer {
            embed: Tuned::new(EmbeddingConfig::new(self.vocab_size, d).init(device)),
            position: EmbeddingConfig::new(self.max_len, d).init(device),
            blocks,
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, self.n_classes).init(device),
        }
    }
}

impl<B: FusedOps> TinyTransformer<B> {
    /// `tokens [batch, seq] -> logits [batch, n_classes]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let positions = TokenBatch::single(tokens.clone(), 0).positions;
        let mut x = self.embed.forward(tokens) + self.position.forward(positions);
        for block in &self.blocks {
            x = x.clone() + block.attn.forward(block.norm1.forward(x));
            x = x.clone() + block.ffn.forward(block.norm2.forward(x));
        }
        let pooled = self.norm.forward(x).mean_dim(1).squeeze_dim::<2>(1);
        self.head.forward(pooled)
    }
}
