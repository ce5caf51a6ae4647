//! A Llama-family decoder (`LlamaForCausalLM`): RoPE, RMSNorm, SwiGLU, grouped-query attention,
//! tied or untied embeddings. Field names follow HF's modules, so the weight map is the identity.

use burn::module::Module;
use burn::nn::{EmbeddingConfig, Initializer, Linear, RmsNorm, RmsNormConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use peft_hf::{HfCheckpoint, WeightMap};
use peft_quant::backend::QuantLinearBackend;
use peft_quant::fused::{fused_rms_norm, fused_swiglu};
use peft_adapter::AdaptedResidual;
use peft_core::{PeftError, Residual, ResidualAdd, Result, Tuned};
use peft_lora::LoraEmbedding;
use peft_ptuning::{AttentionKv, PrefixKv, ProjectedPrefix, PromptInput, RowPrefixes, projected_keys_values, row_prefixes, virtual_tokens};
use serde::Deserialize;

use crate::attention::{AdaptedLinear, LinearAdapter, LinearTuner, attend, hide_empty_prefix, kv_site, linear, plain_weight, prefix_len, row_positions, projected_len, projection_site, prompt_len, prompt_site, split_heads, with_prefixes, pass_keys_values};
use crate::batch::{KvCache, TokenBatch, attention_bias};
use crate::generate::{CausalLm, HeadInput};

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}

/// The fields of a Llama `config.json` this model uses (others are ignored).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (older configs).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE parameters (transformers 5: `{"rope_theta": .., "rope_type": "default"}`).
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    /// RoPE scaling (older configs); only `null` or type `default` is supported.
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    /// Whether the output head reuses the token embeddings.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on the MLP.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Activation; only `silu` is supported.
    #[serde(default)]
    pub hidden_act: Option<String>,
    /// The longest input the model was trained for; longer inputs are refused.
    #[serde(default)]
    pub max_position_embeddings: Option<usize>,
}

impl LlamaConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or_else(|| self.hidden_size.checked_div(self.num_attention_heads).unwrap_or(0))
    }

    /// RoPE base, checking that no unsupported scaling is asked for.
    pub fn rope_base(&self) -> Result<f64> {
        let mut theta = self.rope_theta;
        for params in [&self.rope_parameters, &self.rope_scaling].into_iter().flatten() {
            let kind = params.get("rope_type").or_else(|| params.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
            if kind != "default" {
                return Err(PeftError::UnsupportedValue { key: "rope_type".into(), value: kind.into(), supported: "default".into() });
            }
            theta = theta.or_else(|| params.get("rope_theta").and_then(|t| t.as_f64()));
        }
        Ok(theta.unwrap_or_else(default_theta))
    }

    fn check(&self) -> Result<()> {
        if let Some(act) = self.hidden_act.as_deref().filter(|a| *a != "silu") {
            return Err(PeftError::UnsupportedValue { key: "hidden_act (Llama)".into(), value: act.into(), supported: "silu".into() });
        }
        if self.num_hidden_layers == 0 || self.hidden_size == 0 {
            // A zero width would also make every layer parameter-free, so that no checkpoint
            // bounds the layer count.
            return Err(PeftError::InvalidConfig(format!("Llama with hidden_size {} and {} layers", self.hidden_size, self.num_hidden_layers)));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return Err(PeftError::InvalidConfig(format!("rms_norm_eps must be positive and finite, got {}", self.rms_norm_eps)));
        }
        if self.num_attention_heads == 0 || self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(PeftError::InvalidConfig(format!("{} attention heads cannot share {} key/value heads", self.num_attention_heads, self.kv_heads())));
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            return Err(PeftError::InvalidConfig(format!("RoPE needs an even head width, got {}", self.head_dim())));
        }
        self.rope_base().map(|_| ())
    }

    /// Builds the model with zero weights (load a checkpoint into it with [`peft_hf::load_hf_weights`]).
    pub fn init<B: Backend, T: LinearTuner<B>>(&self, device: &B::Device) -> Result<Llama<B, T>> {
        self.check()?;
        let (d, hd, heads, kvh) = (self.hidden_size, self.head_dim(), self.num_attention_heads, self.kv_heads());
        let norm = |eps| RmsNormConfig::new(d).with_epsilon(eps).init(device);
        let layers = (0..self.num_hidden_layers)
            .map(|_| LlamaLayer {
                input_layernorm: norm(self.rms_norm_eps),
                self_attn: LlamaAttention {
                    q_proj: linear(d, heads * hd, self.attention_bias, device),
                    k_proj: linear(d, kvh * hd, self.attention_bias, device),
                    v_proj: linear(d, kvh * hd, self.attention_bias, device),
                    o_proj: linear(heads * hd, d, self.attention_bias, device),
                    kv: kv_site(kvh, hd, d),
                    heads,
                    kv_heads: kvh,
                },
                post_attention_layernorm: norm(self.rms_norm_eps),
                mlp: LlamaMlp {
                    gate_proj: linear(d, self.intermediate_size, self.mlp_bias, device),
                    up_proj: linear(d, self.intermediate_size, self.mlp_bias, device),
                    down_proj: linear(self.intermediate_size, d, self.mlp_bias, device),
                },
                attention_adapters: Tuned::new(ResidualAdd::new(d, device)),
                output_adapters: Tuned::new(ResidualAdd::new(d, device)),
            })
            .collect();
        Ok(Llama {
            model: LlamaModel {
                embed_tokens: Tuned::new(EmbeddingConfig::new(self.vocab_size, d).with_initializer(Initializer::Zeros).init(device)),
                prompt: prompt_site(d),
                prefix_projection: projection_site(self.num_hidden_layers, kvh, hd),
                layers,
                norm: norm(self.rms_norm_eps),
            },
            lm_head: (!self.tie_word_embeddings).then(|| linear(d, self.vocab_size, false, device)),
            score: None,
            rope_base: self.rope_base()?,
            max_positions: self.max_position_embeddings,
        })
    }
}

/// Attention with grouped keys/values.
#[derive(Module, Debug)]
pub struct LlamaAttention<B: Backend, T: Module<B>> {
    /// `hidden -> heads * head_dim`.
    pub q_proj: AdaptedLinear<B, T>,
    /// `hidden -> kv_heads * head_dim`.
    pub k_proj: AdaptedLinear<B, T>,
    /// `hidden -> kv_heads * head_dim`.
    pub v_proj: AdaptedLinear<B, T>,
    /// `heads * head_dim -> hidden`.
    pub o_proj: AdaptedLinear<B, T>,
    /// Keys (after RoPE) and values, where prefixes attach.
    pub kv: PrefixKv<B>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
}
peft_core::adaptable!(LlamaAttention<T: LinearTuner<B>> { q_proj, k_proj, v_proj, o_proj, kv });

/// `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct LlamaMlp<B: Backend, T: Module<B>> {
    /// Gate.
    pub gate_proj: AdaptedLinear<B, T>,
    /// Up.
    pub up_proj: AdaptedLinear<B, T>,
    /// Down.
    pub down_proj: AdaptedLinear<B, T>,
}
peft_core::adaptable!(LlamaMlp<T: LinearTuner<B>> { gate_proj, up_proj, down_proj });

/// One pre-norm decoder layer.
#[derive(Module, Debug)]
pub struct LlamaLayer<B: Backend, T: Module<B>> {
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Attention.
    pub self_attn: LlamaAttention<B, T>,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm<B>,
    /// SwiGLU MLP.
    pub mlp: LlamaMlp<B, T>,
    /// The residual add after attention, where bottleneck adapters attach (AdapterHub's name).
    pub attention_adapters: AdaptedResidual<B>,
    /// The residual add after the MLP, where bottleneck adapters attach (AdapterHub's name).
    pub output_adapters: AdaptedResidual<B>,
}
peft_core::adaptable!(LlamaLayer<T: LinearTuner<B>> { self_attn, mlp, attention_adapters, output_adapters });

/// The decoder stack (HF's `model`).
#[derive(Module, Debug)]
pub struct LlamaModel<B: Backend, T: Module<B>> {
    /// Token embeddings (LoRA-able).
    pub embed_tokens: LoraEmbedding<B>,
    /// Where prompt tuning's virtual tokens go, before the embedded tokens.
    pub prompt: PromptInput<B>,
    /// Where a projected prefix (peft's `prefix_projection`) makes every layer's prefix.
    pub prefix_projection: ProjectedPrefix<B>,
    /// Decoder layers.
    pub layers: Vec<LlamaLayer<B, T>>,
    /// Final norm.
    pub norm: RmsNorm<B>,
}
peft_core::adaptable!(LlamaModel<T: LinearTuner<B>> { embed_tokens, prompt, prefix_projection, layers });

/// `LlamaForCausalLM`.
#[derive(Module, Debug)]
pub struct Llama<B: Backend, T: Module<B>> {
    /// The decoder.
    pub model: LlamaModel<B, T>,
    /// Output head; `None` when tied to the token embeddings.
    pub lm_head: Option<AdaptedLinear<B, T>>,
    /// Sequence-classification head (`LlamaForSequenceClassification`'s `score`), when set
    /// ([`HfModel::set_classifier`](crate::HfModel::set_classifier)).
    pub score: Option<Linear<B>>,
    /// RoPE base.
    pub rope_base: f64,
    /// `max_position_embeddings`, when the config gives it.
    pub max_positions: Option<usize>,
}
peft_core::adaptable!(Llama<T: LinearTuner<B>> { model, lm_head });

/// What RoPE needs for one forward pass: `cos`, `sin` `[batch, 1, seq, head_dim]` (HF's layout,
/// frequencies repeated over both halves, computed in f32) and `rotate_half` as a matrix.
#[derive(Clone, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    /// `[head_dim, head_dim]`: `x · rotation = rotate_half(x) = [-x2, x1]`, a signed permutation.
    rotation: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    /// The tables for `positions [batch, seq]` moved by `offset` (a position may be negative
    /// when the offset makes up for it).
    fn new(positions: &Tensor<B, 2, Int>, offset: usize, head_dim: usize, base: f64) -> Self {
        let [batch, seq] = positions.dims();
        let device = positions.device();
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = (0..half).map(|i| (1.0 / base.powf((2 * i) as f64 / head_dim as f64)) as f32).collect();
        let positions = positions.to_data().convert::<i64>().into_vec::<i64>().unwrap_or_default();
        let mut cos = Vec::with_capacity(positions.len() * head_dim);
        let mut sin = Vec::with_capacity(positions.len() * head_dim);
        for p in positions {
            for j in 0..head_dim {
                let angle = (p + offset as i64) as f32 * inv_freq[j % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let table = |v| Tensor::<B, 3>::from_data(TensorData::new(v, [batch, seq, head_dim]), &device).unsqueeze_dim(1);
        let mut rotation = vec![0.0f32; head_dim * head_dim];
        for j in 0..half {
            rotation[(j + half) * head_dim + j] = -1.0;
            rotation[j * head_dim + j + half] = 1.0;
        }
        Self { cos: table(cos), sin: table(sin), rotation: Tensor::from_data(TensorData::new(rotation, [head_dim, head_dim]), &device) }
    }

    /// `x·cos + rotate_half(x)·sin`; `x [batch, heads, seq, head_dim]`. `rotate_half` is one
    /// product with the signed permutation (exact: one ±1 term per output), which costs less on
    /// the CPU than splitting, negating and concatenating the halves (docs/benchmarks.md).
    fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, heads, seq, hd] = x.dims();
        let rotated = x.clone().reshape([batch * heads * seq, hd]).matmul(self.rotation.clone()).reshape([batch, heads, seq, hd]);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> LlamaAttention<B, T> {
    /// `[batch, seq, hidden] -> [batch, seq, hidden]`, with rotary tables for the tokens'
    /// positions and the attention bias of the pass ([`attention_bias`]); `keys_values` turns
    /// the pass's own keys (after RoPE) and values into all those attended to (a prefix's, a
    /// prompt's, a cache's before them).
    pub fn forward(&self, x: Tensor<B, 3>, rope: &Rope<B>, bias: &Tensor<B, 4>, keys_values: impl FnOnce(AttentionKv<B>) -> (Tensor<B, 4>, Tensor<B, 4>)) -> Tensor<B, 3> {
        let q = rope.apply(split_heads(self.q_proj.forward(x.clone()), self.heads));
        let k = rope.apply(split_heads(self.k_proj.forward(x.clone()), self.kv_heads));
        let v = split_heads(self.v_proj.forward(x.clone()), self.kv_heads);
        let (k, v) = keys_values(AttentionKv::new(k, v, x));
        self.o_proj.forward(attend(q, k, v, Some(bias)))
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> Llama<B, T> {
    /// Positions the live prefix and prompt adapters put before the tokens.
    pub fn prefix_len(&self) -> usize {
        self.kv_prefix_len() + prompt_len(&self.model.prompt)
    }

    fn kv_prefix_len(&self) -> usize {
        projected_len(&self.model.prefix_projection) + self.model.layers.first().map_or(0, |l| prefix_len(&l.self_attn.kv))
    }

    /// How the rows fill the prefix positions with per-example prefixes.
    fn row_prefixes(&self) -> Option<RowPrefixes> {
        self.model.layers.first().and_then(|l| row_prefixes(&l.self_attn.kv))
    }

    fn head_dim(&self) -> usize {
        let first = &self.model.layers[0].self_attn;
        first.k_proj.base.dims()[1] / first.kv_heads
    }

    /// An empty key/value cache for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.model.layers.len())
    }

    /// The decoder layers on `h`; `keys_values(layer, attention, k, v)` gives each attention its
    /// keys and values.
    fn decode(&self, mut h: Tensor<B, 3>, rope: &Rope<B>, bias: &Tensor<B, 4>, mut keys_values: impl FnMut(usize, &LlamaAttention<B, T>, AttentionKv<B>) -> (Tensor<B, 4>, Tensor<B, 4>)) -> Tensor<B, 3> {
        for (i, layer) in self.model.layers.iter().enumerate() {
            let attention = &layer.self_attn;
            let attended = attention.forward(fused_rms_norm(&layer.input_layernorm, h.clone()), rope, bias, |kv| keys_values(i, attention, kv));
            h = layer.attention_adapters.forward(Residual { hidden: attended, residual: h });
            let x = fused_rms_norm(&layer.post_attention_layernorm, h.clone());
            let mlp = &layer.mlp;
            let fed = mlp.down_proj.forward(fused_swiglu(mlp.gate_proj.forward(x.clone()), mlp.up_proj.forward(x)));
            h = layer.output_adapters.forward(Residual { hidden: fed, residual: h });
        }
        h
    }

    /// Every layer's keys and values `[1, kv_heads, prefix + n, head_dim]` of the live prompt's
    /// `n` virtual tokens, run alone after the prefix: a decoder's virtual tokens see nothing
    /// after them, so one pass serves every row and every later token (peft runs them in every
    /// row).
    fn prompt_keys_values(&self, projected: Option<&[(Tensor<B, 4>, Tensor<B, 4>)]>) -> Option<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
        let tokens = virtual_tokens(&self.model.prompt)?;
        let n = tokens.dims()[0];
        let alone = TokenBatch::single(Tensor::<B, 2, Int>::zeros([1, n], &tokens.device()), 0);
        let prefix = self.kv_prefix_len();
        let rope = Rope::new(&alone.positions, prefix, self.head_dim(), self.rope_base);
        let bias = attention_bias(&alone.segments, &alone.segments, prefix, true);
        let mut out = Vec::with_capacity(self.model.layers.len());
        self.decode(tokens.unsqueeze_dim(0), &rope, &bias, |i, attention, kv| {
            let kv = with_prefixes(&attention.kv, projected.map(|p| &p[i]), kv);
            out.push(kv.clone());
            kv
        });
        Some(out)
    }

    /// The final hidden states `[batch, seq, hidden]` of `batch`; with a cache, `batch` continues
    /// the cached tokens.
    pub fn hidden_states(&self, batch: &TokenBatch<B>, mut cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        // peft's prefixes and prompts occupy the first positions: real tokens are rotated from there on.
        let offset = self.prefix_len();
        let fresh = cache.as_ref().is_none_or(|c| c.is_empty());
        let projected = if fresh { projected_keys_values(&self.model.prefix_projection) } else { None };
        let prompt = if fresh { self.prompt_keys_values(projected.as_deref()) } else { None };
        let rows = self.row_prefixes();
        let rope = Rope::new(&row_positions(batch.positions.clone(), rows.as_ref()), offset, self.head_dim(), self.rope_base);
        let keys = cache.as_deref_mut().map_or_else(|| batch.segments.clone(), |c| c.extend_segments(&batch.segments));
        let bias = hide_empty_prefix(attention_bias(&batch.segments, &keys, offset, true), rows.as_ref());
        let h = self.model.embed_tokens.forward(batch.tokens.clone());
        let h = self.decode(h, &rope, &bias, |i, attention, kv| {
            pass_keys_values(i, &attention.kv, projected.as_deref(), prompt.as_deref(), cache.as_deref_mut(), kv)
        });
        fused_rms_norm(&self.model.norm, h)
    }

    /// Logits `[batch, seq, vocab]` of `batch` (see [`hidden_states`](Self::hidden_states)).
    pub fn forward_batch(&self, batch: &TokenBatch<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let h = self.hidden_states(batch, cache);
        match &self.lm_head {
            Some(head) => head.forward(h),
            None => h.matmul(self.model.embed_tokens.base.weight.val().transpose().unsqueeze::<3>()),
        }
    }

    /// Logits `[batch, seq, vocab]` for unpadded `tokens [batch, seq]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_batch(&TokenBatch::single(tokens, 0), None)
    }
}

impl<B: QuantLinearBackend, T: LinearAdapter<B>> CausalLm<B> for Llama<B, T> {
    fn logits(&self, batch: &TokenBatch<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        self.forward_batch(batch, cache)
    }
    fn new_cache(&self) -> KvCache<B> {
        self.new_cache()
    }
    fn max_positions(&self) -> Option<usize> {
        self.max_positions.map(|m| m.saturating_sub(self.prefix_len()))
    }
    fn hidden_and_head(&self, batch: &TokenBatch<B>) -> Option<HeadInput<B>> {
        let (weight, tied) = match &self.lm_head {
            Some(head) => (plain_weight(head)?, false),
            None => (self.model.embed_tokens.base.weight.val(), true),
        };
        Some(HeadInput::new(self.hidden_states(batch, None), weight, tied))
    }
}

impl<B: Backend, T: LinearTuner<B>> HfCheckpoint<B> for Llama<B, T> {
    /// HF names are this model's field names.
    fn weight_map(&self) -> WeightMap {
        WeightMap::new()
    }
}
