//! GPT-2 (`GPT2LMHeadModel`). Its checkpoints store linear weights `[in, out]` (`Conv1D`), which
//! is Burn's own layout: the weight map loads them untransposed (HF peft's `fan_in_fan_out`).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use peft_hf::{HfCheckpoint, WeightMap};
use peft_quant::backend::QuantLinearBackend;
use peft_adapter::AdaptedResidual;
use peft_core::{PeftError, Residual, ResidualAdd, Result, Tuned};
use peft_lora::LoraEmbedding;
use peft_ptuning::{AttentionKv, PrefixKv, ProjectedPrefix, PromptInput, RowPrefixes, projected_keys_values, row_prefixes, virtual_tokens};
use serde::Deserialize;

use crate::attention::{AdaptedLinear, LinearAdapter, LinearTuner, attend, hide_empty_prefix, kv_site, row_positions, linear, prefix_len, projected_len, projection_site, prompt_len, prompt_site, split_heads, with_prefixes, pass_keys_values};
use crate::batch::{KvCache, TokenBatch, attention_bias};
use crate::generate::{CausalLm, HeadInput};

fn default_eps() -> f64 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

/// The fields of a GPT-2 `config.json` this model uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence.
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Heads.
    pub n_head: usize,
    /// Feed-forward width (default `4 * n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (tanh approximation) or `gelu` (erf).
    #[serde(default = "default_act")]
    pub activation_function: String,
}

impl Gpt2Config {
    /// Builds the model with zero weights.
    pub fn init<B: Backend, T: LinearTuner<B>>(&self, device: &B::Device) -> Result<Gpt2<B, T>> {
        let d = self.n_embd;
        if d == 0 || self.n_head == 0 || !d.is_multiple_of(self.n_head) || self.n_layer == 0 {
            return Err(PeftError::InvalidConfig(format!("GPT-2 with n_embd {d}, n_head {}, n_layer {}", self.n_head, self.n_layer)));
        }
        let tanh = match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => true,
            "gelu" => false,
            other => return Err(PeftError::UnsupportedValue { key: "activation_function (GPT-2)".into(), value: other.into(), supported: "gelu_new, gelu_pytorch_tanh, gelu".into() }),
        };
        let inner = self.n_inner.unwrap_or(4 * d);
        let norm = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_epsilon).init(device);
        let embedding = |n| EmbeddingConfig::new(n, d).with_initializer(Initializer::Zeros).init(device);
        let h = (0..self.n_layer)
            .map(|_| Gpt2Block {
                ln_1: norm(),
                attn: Gpt2Attention { c_attn: linear(d, 3 * d, true, device), c_proj: linear(d, d, true, device), kv: kv_site(self.n_head, d / self.n_head, d), heads: self.n_head },
                ln_2: norm(),
                mlp: Gpt2Mlp { c_fc: linear(d, inner, true, device), c_proj: linear(inner, d, true, device), tanh },
                attention_adapters: Tuned::new(ResidualAdd::new(d, device)),
                output_adapters: Tuned::new(ResidualAdd::new(d, device)),
            })
            .collect();
        Ok(Gpt2 { transformer: Gpt2Model { wte: Tuned::new(embedding(self.vocab_size)), wpe: embedding(self.n_positions), prompt: prompt_site(d), prefix_projection: projection_site(self.n_layer, self.n_head, d / self.n_head), h, ln_f: norm() }, score: None })
    }
}

/// Attention with a fused query/key/value projection.
#[derive(Module, Debug)]
pub struct Gpt2Attention<B: Backend, T: Module<B>> {
    /// `d -> 3d` (queries, keys, values).
    pub c_attn: AdaptedLinear<B, T>,
    /// `d -> d`.
    pub c_proj: AdaptedLinear<B, T>,
    /// Keys and values, where prefixes attach.
    pub kv: PrefixKv<B>,
    /// Heads.
    pub heads: usize,
}
peft_core::adaptable!(Gpt2Attention<T: LinearTuner<B>> { c_attn, c_proj, kv });

/// `c_proj(gelu(c_fc(x)))`.
#[derive(Module, Debug)]
pub struct Gpt2Mlp<B: Backend, T: Module<B>> {
    /// `d -> inner`.
    pub c_fc: AdaptedLinear<B, T>,
    /// `inner -> d`.
    pub c_proj: AdaptedLinear<B, T>,
    /// tanh-approximated GELU (`gelu_new`).
    pub tanh: bool,
}
peft_core::adaptable!(Gpt2Mlp<T: LinearTuner<B>> { c_fc, c_proj });

/// One pre-norm block.
#[derive(Module, Debug)]
pub struct Gpt2Block<B: Backend, T: Module<B>> {
    /// Norm before attention.
    pub ln_1: LayerNorm<B>,
    /// Attention.
    pub attn: Gpt2Attention<B, T>,
    /// Norm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// MLP.
    pub mlp: Gpt2Mlp<B, T>,
    /// The residual add after attention, where bottleneck adapters attach (AdapterHub's name).
    pub attention_adapters: AdaptedResidual<B>,
    /// The residual add after the MLP, where bottleneck adapters attach (AdapterHub's name).
    pub output_adapters: AdaptedResidual<B>,
}
peft_core::adaptable!(Gpt2Block<T: LinearTuner<B>> { attn, mlp, attention_adapters, output_adapters });

/// The transformer (HF's `transformer`).
#[derive(Module, Debug)]
pub struct Gpt2Model<B: Backend, T: Module<B>> {
    /// Token embeddings, also the output head.
    pub wte: LoraEmbedding<B>,
    /// Learned positions.
    pub wpe: Embedding<B>,
    /// Where prompt tuning's virtual tokens go, before the embedded tokens.
    pub prompt: PromptInput<B>,
    /// Where a projected prefix (peft's `prefix_projection`) makes every block's prefix.
    pub prefix_projection: ProjectedPrefix<B>,
    /// Blocks.
    pub h: Vec<Gpt2Block<B, T>>,
    /// Final norm.
    pub ln_f: LayerNorm<B>,
}
peft_core::adaptable!(Gpt2Model<T: LinearTuner<B>> { wte, prompt, prefix_projection, h });

/// `GPT2LMHeadModel` (head tied to `wte`).
#[derive(Module, Debug)]
pub struct Gpt2<B: Backend, T: Module<B>> {
    /// The transformer.
    pub transformer: Gpt2Model<B, T>,
    /// Sequence-classification head (`GPT2ForSequenceClassification`'s `score`), when set
    /// ([`HfModel::set_classifier`](crate::HfModel::set_classifier)).
    pub score: Option<Linear<B>>,
}
peft_core::adaptable!(Gpt2<T: LinearTuner<B>> { transformer });

/// GELU, tanh approximation: `0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))`.
fn gelu_tanh<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar((2.0 / core::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * (inner.tanh() + 1.0)
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> Gpt2<B, T> {
    /// Positions the live prefix and prompt adapters put before the tokens.
    pub fn prefix_len(&self) -> usize {
        self.kv_prefix_len() + prompt_len(&self.transformer.prompt)
    }

    fn kv_prefix_len(&self) -> usize {
        projected_len(&self.transformer.prefix_projection) + self.transformer.h.first().map_or(0, |b| prefix_len(&b.attn.kv))
    }

    /// How the rows fill the prefix positions with per-example prefixes.
    fn row_prefixes(&self) -> Option<RowPrefixes> {
        self.transformer.h.first().and_then(|b| row_prefixes(&b.attn.kv))
    }

    /// An empty key/value cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.transformer.h.len())
    }

    /// The blocks on `h`; `keys_values(block, attention, k, v)` gives each attention its keys and
    /// values.
    fn decode(&self, mut h: Tensor<B, 3>, bias: &Tensor<B, 4>, mut keys_values: impl FnMut(usize, &Gpt2Attention<B, T>, AttentionKv<B>) -> (Tensor<B, 4>, Tensor<B, 4>)) -> Tensor<B, 3> {
        for (i, block) in self.transformer.h.iter().enumerate() {
            let x = block.ln_1.forward(h.clone());
            let qkv = block.attn.c_attn.forward(x.clone());
            let d = qkv.dims()[2] / 3;
            let part = |i: usize| split_heads(qkv.clone().narrow(2, i * d, d), block.attn.heads);
            let (k, v) = keys_values(i, &block.attn, AttentionKv::new(part(1), part(2), x));
            let attended = block.attn.c_proj.forward(attend(part(0), k, v, Some(bias)));
            h = block.attention_adapters.forward(Residual { hidden: attended, residual: h });
            let up = block.mlp.c_fc.forward(block.ln_2.forward(h.clone()));
            let act = if block.mlp.tanh { gelu_tanh(up) } else { burn::tensor::activation::gelu(up) };
            h = block.output_adapters.forward(Residual { hidden: block.mlp.c_proj.forward(act), residual: h });
        }
        h
    }

    /// Every block's keys and values `[1, heads, prefix + n, head_dim]` of the live prompt's `n`
    /// virtual tokens (at positions after the prefix), run alone: a decoder's virtual tokens see
    /// nothing after them, so one pass serves every row and every later token.
    fn prompt_keys_values(&self, projected: Option<&[(Tensor<B, 4>, Tensor<B, 4>)]>) -> Option<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
        let t = &self.transformer;
        let tokens = virtual_tokens(&t.prompt)?;
        let n = tokens.dims()[0];
        let prefix = self.kv_prefix_len();
        let alone = TokenBatch::single(Tensor::<B, 2, Int>::zeros([1, n], &tokens.device()), prefix);
        let bias = attention_bias(&alone.segments, &alone.segments, prefix, true);
        let h = tokens.unsqueeze_dim(0) + t.wpe.forward(alone.positions);
        let mut out = Vec::with_capacity(t.h.len());
        self.decode(h, &bias, |i, attention, kv| {
            let kv = with_prefixes(&attention.kv, projected.map(|p| &p[i]), kv);
            out.push(kv.clone());
            kv
        });
        Some(out)
    }

    /// Final hidden states `[batch, seq, n_embd]` of `batch`; with a cache, `batch` continues the
    /// cached tokens.
    pub fn hidden_states(&self, batch: &TokenBatch<B>, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let t = &self.transformer;
        // With a prefix or a prompt, real tokens take positions after it, as in peft.
        let offset = self.prefix_len();
        let fresh = cache.as_ref().is_none_or(|c| c.is_empty());
        let projected = if fresh { projected_keys_values(&self.transformer.prefix_projection) } else { None };
        let prompt = if fresh { self.prompt_keys_values(projected.as_deref()) } else { None };
        let keys = cache.as_deref_mut().map_or_else(|| batch.segments.clone(), |c| c.extend_segments(&batch.segments));
        let rows = self.row_prefixes();
        let bias = hide_empty_prefix(attention_bias(&batch.segments, &keys, offset, true), rows.as_ref());
        let positions = row_positions(batch.positions.clone(), rows.as_ref()).add_scalar(offset as i64);
        let h = t.wte.forward(batch.tokens.clone()) + t.wpe.forward(positions);
        let h = self.decode(h, &bias, |i, attention, kv| {
            pass_keys_values(i, &attention.kv, projected.as_deref(), prompt.as_deref(), cache.as_deref_mut(), kv)
        });
        t.ln_f.forward(h)
    }

    /// Logits `[batch, seq, vocab]` of `batch` (see [`hidden_states`](Self::hidden_states)).
    pub fn forward_batch(&self, batch: &TokenBatch<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        self.hidden_states(batch, cache).matmul(self.transformer.wte.base.weight.val().transpose().unsqueeze::<3>())
    }

    /// Logits `[batch, seq, vocab]` for unpadded `tokens [batch, seq]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_batch(&TokenBatch::single(tokens, 0), None)
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> CausalLm<B> for Gpt2<B, T> {
    fn logits(&self, batch: &TokenBatch<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        self.forward_batch(batch, cache)
    }
    fn new_cache(&self) -> KvCache<B> {
        self.new_cache()
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.transformer.wpe.weight.dims()[0].saturating_sub(self.prefix_len()))
    }
    fn hidden_and_head(&self, batch: &TokenBatch<B>) -> Option<HeadInput<B>> {
        Some(HeadInput::new(self.hidden_states(batch, None), self.transformer.wte.base.weight.val(), true))
    }
}

impl<B: Backend, T: LinearTuner<B>> HfCheckpoint<B> for Gpt2<B, T> {
    /// `Conv1D` weights `[in, out]`; files saved from `GPT2Model` lack the `transformer.` prefix.
    fn weight_map(&self) -> WeightMap {
        WeightMap::new().linear_weights_in_out(true).torch_linear("score").fallback_prefix("transformer.", "")
    }
}
