//! The BERT encoder (`BertModel`), as in all-MiniLM-L6-v2. Rust has no field called `self` and
//! Burn fields are snake case, so the weight map renames `self_attn` ↔ `self` and
//! `layer_norm` ↔ `LayerNorm`.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use peft_hf::{HfCheckpoint, WeightMap};
use peft_quant::backend::QuantLinearBackend;
use peft_adapter::AdaptedNorm;
use peft_core::{PeftError, Residual, Result, Tuned};
use peft_lora::LoraEmbedding;
use peft_ptuning::{AttentionKv, PrefixKv, ProjectedPrefix, PromptInput, RowPrefixes, projected_keys_values, row_prefixes};
use serde::Deserialize;

use crate::attention::{AdaptedLinear, LinearAdapter, LinearTuner, attend, hide_empty_prefix, kv_site, row_positions, linear, prefix_len, projected_len, projection_site, prompt_len, prompt_site, split_heads, with_prefixes};
use crate::batch::{TokenBatch, attention_bias};

fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}

/// The fields of a BERT `config.json` this model uses.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Longest sequence.
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Only `gelu` is supported.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// Only `absolute` is supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl BertConfig {
    /// Builds the model with zero weights, with the pooler (as HF's `BertModel`).
    pub fn init<B: Backend, T: LinearTuner<B>>(&self, device: &B::Device) -> Result<Bert<B, T>> {
        self.init_with_pooler(true, device)
    }

    /// Builds the model with zero weights, with or without the pooler (checkpoints saved with
    /// `add_pooling_layer=False` have none).
    pub fn init_with_pooler<B: Backend, T: LinearTuner<B>>(&self, pooler: bool, device: &B::Device) -> Result<Bert<B, T>> {
        let d = self.hidden_size;
        if d == 0 || self.num_attention_heads == 0 || !d.is_multiple_of(self.num_attention_heads) || self.num_hidden_layers == 0 {
            return Err(PeftError::InvalidConfig(format!("BERT with hidden_size {d}, {} heads, {} layers", self.num_attention_heads, self.num_hidden_layers)));
        }
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "gelu") {
            return Err(PeftError::UnsupportedValue { key: "hidden_act (BERT)".into(), value: act.into(), supported: "gelu".into() });
        }
        if let Some(p) = self.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
            return Err(PeftError::UnsupportedValue { key: "position_embedding_type (BERT)".into(), value: p.into(), supported: "absolute".into() });
        }
        let norm = || LayerNormConfig::new(d).with_epsilon(self.layer_norm_eps).init(device);
        let adapted_norm = || Tuned::new(norm());
        let embedding = |n| EmbeddingConfig::new(n, d).with_initializer(Initializer::Zeros).init(device);
        let heads = self.num_attention_heads;
        let layer = (0..self.num_hidden_layers)
            .map(|_| BertLayer {
                attention: BertAttention {
                    self_attn: BertSelfAttention {
                        query: linear(d, d, true, device),
                        key: linear(d, d, true, device),
                        value: linear(d, d, true, device),
                        kv: kv_site(heads, d / heads, d),
                        heads,
                    },
                    output: BertOutput { dense: linear(d, d, true, device), layer_norm: adapted_norm() },
                },
                intermediate: BertIntermediate { dense: linear(d, self.intermediate_size, true, device) },
                output: BertOutput { dense: linear(self.intermediate_size, d, true, device), layer_norm: adapted_norm() },
            })
            .collect();
        Ok(Bert {
            embeddings: BertEmbeddings {
                word_embeddings: Tuned::new(embedding(self.vocab_size)),
                prompt: prompt_site(d),
                position_embeddings: embedding(self.max_position_embeddings),
                token_type_embeddings: embedding(self.type_vocab_size),
                layer_norm: norm(),
            },
            encoder: BertEncoder { layer },
            prefix_projection: projection_site(self.num_hidden_layers, heads, d / heads),
            pooler: pooler.then(|| BertPooler { dense: linear(d, d, true, device) }),
            classifier: None,
        })
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct BertEmbeddings<B: Backend> {
    /// Words (LoRA-able).
    pub word_embeddings: LoraEmbedding<B>,
    /// Where prompt tuning's virtual tokens go, before the words (they take the first positions,
    /// token type 0, and see and are seen by every token, as in peft).
    pub prompt: PromptInput<B>,
    /// Positions.
    pub position_embeddings: Embedding<B>,
    /// Token types (all type 0 here).
    pub token_type_embeddings: Embedding<B>,
    /// Norm.
    pub layer_norm: LayerNorm<B>,
}
peft_core::adaptable!(BertEmbeddings { word_embeddings, prompt });

/// Queries, keys and values (HF's `attention.self`).
#[derive(Module, Debug)]
pub struct BertSelfAttention<B: Backend, T: Module<B>> {
    /// Queries.
    pub query: AdaptedLinear<B, T>,
    /// Keys.
    pub key: AdaptedLinear<B, T>,
    /// Values.
    pub value: AdaptedLinear<B, T>,
    /// Keys and values, where prefixes attach.
    pub kv: PrefixKv<B>,
    /// Heads.
    pub heads: usize,
}
peft_core::adaptable!(BertSelfAttention<T: LinearTuner<B>> { query, key, value, kv });

/// `layer_norm(dense(x) + residual)`.
#[derive(Module, Debug)]
pub struct BertOutput<B: Backend, T: Module<B>> {
    /// Projection.
    pub dense: AdaptedLinear<B, T>,
    /// Post-residual norm, where bottleneck adapters attach (AdapterHub's places: target
    /// `attention.output.layer_norm` after attention, `output.layer_norm` after each block).
    pub layer_norm: AdaptedNorm<B>,
}
peft_core::adaptable!(BertOutput<T: LinearTuner<B>> { dense, layer_norm });

/// Self-attention and its output projection.
#[derive(Module, Debug)]
pub struct BertAttention<B: Backend, T: Module<B>> {
    /// Attention proper (HF `self`).
    pub self_attn: BertSelfAttention<B, T>,
    /// Output projection and norm.
    pub output: BertOutput<B, T>,
}
peft_core::adaptable!(BertAttention<T: LinearTuner<B>> { self_attn, output });

/// The feed-forward up-projection.
#[derive(Module, Debug)]
pub struct BertIntermediate<B: Backend, T: Module<B>> {
    /// `d -> intermediate`.
    pub dense: AdaptedLinear<B, T>,
}
peft_core::adaptable!(BertIntermediate<T: LinearTuner<B>> { dense });

/// One post-norm encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer<B: Backend, T: Module<B>> {
    /// Attention.
    pub attention: BertAttention<B, T>,
    /// Feed-forward up.
    pub intermediate: BertIntermediate<B, T>,
    /// Feed-forward down, residual and norm.
    pub output: BertOutput<B, T>,
}
peft_core::adaptable!(BertLayer<T: LinearTuner<B>> { attention, intermediate, output });

/// The layers.
#[derive(Module, Debug)]
pub struct BertEncoder<B: Backend, T: Module<B>> {
    /// Layers.
    pub layer: Vec<BertLayer<B, T>>,
}
peft_core::adaptable!(BertEncoder<T: LinearTuner<B>> { layer });

/// `tanh(dense(h[:, 0]))`, the pooled output.
#[derive(Module, Debug)]
pub struct BertPooler<B: Backend, T: Module<B>> {
    /// `d -> d`.
    pub dense: AdaptedLinear<B, T>,
}
peft_core::adaptable!(BertPooler<T: LinearTuner<B>> { dense });

/// `BertModel`.
#[derive(Module, Debug)]
pub struct Bert<B: Backend, T: Module<B>> {
    /// Embeddings.
    pub embeddings: BertEmbeddings<B>,
    /// Encoder.
    pub encoder: BertEncoder<B, T>,
    /// Where a projected prefix (peft's `prefix_projection`) makes every layer's prefix.
    pub prefix_projection: ProjectedPrefix<B>,
    /// Pooler, when the checkpoint has one.
    pub pooler: Option<BertPooler<B, T>>,
    /// Sequence-classification head over the pooled output (`BertForSequenceClassification`'s
    /// `classifier`), when set ([`HfModel::set_classifier`](crate::HfModel::set_classifier)).
    pub classifier: Option<Linear<B>>,
}
peft_core::adaptable!(Bert<T: LinearTuner<B>> { embeddings, encoder, prefix_projection, pooler });

impl<B: QuantLinearBackend, T: LinearAdapter<B>> BertOutput<B, T> {
    fn forward(&self, x: Tensor<B, 3>, residual: Tensor<B, 3>) -> Tensor<B, 3> {
        self.layer_norm.forward(Residual { hidden: self.dense.forward(x), residual })
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> Bert<B, T> {
    /// Positions the live prefix and prompt adapters put before the tokens.
    pub fn prefix_len(&self) -> usize {
        self.kv_prefix_len() + prompt_len(&self.embeddings.prompt)
    }

    fn kv_prefix_len(&self) -> usize {
        projected_len(&self.prefix_projection) + self.encoder.layer.first().map_or(0, |l| prefix_len(&l.attention.self_attn.kv))
    }

    /// How the rows fill the prefix positions with per-example prefixes.
    fn row_prefixes(&self) -> Option<RowPrefixes> {
        self.encoder.layer.first().and_then(|l| row_prefixes(&l.attention.self_attn.kv))
    }

    /// The last hidden state `[batch, seq, hidden]` for `tokens [batch, seq]` (one segment, no
    /// padding).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_padded(tokens, None)
    }

    /// Like [`forward`](Self::forward) for a padded batch: `padding [batch, seq]` is 1 for real
    /// tokens and 0 for padding (HF's `attention_mask`); padded keys are not attended to.
    pub fn forward_padded(&self, tokens: Tensor<B, 2, Int>, padding: Option<Tensor<B, 2>>) -> Tensor<B, 3> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let e = &self.embeddings;
        let offset = self.kv_prefix_len();
        // A prompt's virtual tokens come first in every row, as peft puts them.
        let words = e.prompt.forward(e.word_embeddings.forward(tokens));
        let [_, total, _] = words.dims();
        let virtual_tokens = total - seq;
        let types = Tensor::<B, 2, Int>::zeros([batch, total], &device);
        let rows = self.row_prefixes();
        let positions = row_positions(TokenBatch::single(types.clone(), offset).positions, rows.as_ref());
        let x = words + e.position_embeddings.forward(positions) + e.token_type_embeddings.forward(types);
        let mut h = e.layer_norm.forward(x);
        // Every real token sees every real token (and the prefix and the prompt); padding is seen
        // by none.
        let padding = padding.map(|p| if virtual_tokens == 0 { p } else { Tensor::cat(vec![Tensor::ones([batch, virtual_tokens], &device), p], 1) });
        // Per-example prefixes hide the prefix positions a row leaves empty, padded or not.
        let padding = padding.or_else(|| rows.as_ref().map(|_| Tensor::ones([batch, total], &device)));
        let bias = padding.map(|p| hide_empty_prefix(attention_bias(&p.clone().int(), &p.int(), offset, false), rows.as_ref()));
        let projected = projected_keys_values(&self.prefix_projection);
        for (i, layer) in self.encoder.layer.iter().enumerate() {
            let a = &layer.attention.self_attn;
            let kv = AttentionKv::new(split_heads(a.key.forward(h.clone()), a.heads), split_heads(a.value.forward(h.clone()), a.heads), h.clone());
            let (k, v) = with_prefixes(&a.kv, projected.as_ref().map(|p| &p[i]), kv);
            let context = attend(split_heads(a.query.forward(h.clone()), a.heads), k, v, bias.as_ref());
            h = layer.attention.output.forward(context, h);
            let up = gelu(layer.intermediate.dense.forward(h.clone()));
            h = layer.output.forward(up, h);
        }
        h.narrow(1, virtual_tokens, seq)
    }

    /// The pooled output `[batch, hidden]`, `tanh(dense(h[:, 0]))`, when the model has a pooler.
    pub fn pooled(&self, last_hidden: Tensor<B, 3>) -> Option<Tensor<B, 2>> {
        let pooler = self.pooler.as_ref()?;
        let first = last_hidden.narrow(1, 0, 1);
        Some(pooler.dense.forward(first).tanh().squeeze_dim::<2>(1))
    }
}

impl<B: Backend, T: LinearTuner<B>> HfCheckpoint<B> for Bert<B, T> {
    /// `self_attn` ↔ `self`, `layer_norm` ↔ `LayerNorm`; `BertFor*` files prefix names with `bert.`,
    /// and with a classification head the model is `BertForSequenceClassification`, whose names
    /// have that prefix (all but `classifier`).
    fn weight_map(&self) -> WeightMap {
        let map = WeightMap::new().rename("self_attn", "self").rename("layer_norm", "LayerNorm");
        if self.classifier.is_none() {
            return map.fallback_prefix("", "bert.");
        }
        ["embeddings", "encoder", "pooler", "prefix_projection"].iter().fold(map, |m, top| m.rename(top, &format!("bert.{top}"))).fallback_prefix("bert.", "")
    }
}
