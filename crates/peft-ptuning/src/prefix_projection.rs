//! Prefix tuning through peft's `prefix_projection`: one MLP makes every attention layer's prefix.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{Adaptable, LayerKind, PeftError, Result, Tuner, trainable};

use crate::PrefixProjectionConfig;

/// Where a model's projected prefixes come from: the sizes of its attention layers' keys and
/// values. It computes nothing itself; the model asks it for every layer's prefix.
#[derive(Module, Clone, Debug)]
pub struct PrefixProjectionSite {
    /// Attention layers.
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl PrefixProjectionSite {
    /// Width of one layer's keys (or values) per token: `kv_heads · head_dim` (peft's `token_dim`).
    pub fn token_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

impl<B: Backend> Adaptable<B> for PrefixProjectionSite {
    fn kind(&self) -> LayerKind {
        LayerKind::PrefixProjection
    }
}

/// Learned embeddings and the MLP that turns them into every layer's keys and values.
#[derive(Module, Debug)]
pub struct PrefixProjection<B: Backend> {
    /// The embeddings `[num_virtual_tokens, kv_heads, head_dim]` (peft's `[.., token_dim]`, by
    /// head: so the saved form knows how the prefix splits into heads).
    pub embeddings: Param<Tensor<B, 3>>,
    /// `token_dim -> h`, then Tanh.
    pub input: Linear<B>,
    /// `h -> layers · 2 · token_dim`.
    pub output: Linear<B>,
}

impl<B: Backend> PrefixProjection<B> {
    /// Number of virtual tokens.
    pub fn len(&self) -> usize {
        self.embeddings.dims()[0]
    }

    /// Whether the prefix has no tokens (never true for a built prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every layer's prefix in peft's layout, `[num_virtual_tokens, layers · 2 · token_dim]`
    /// (entry `2l` of the second axis holds layer `l`'s keys, `2l + 1` its values).
    pub fn projected(&self) -> Tensor<B, 2> {
        let [n, heads, head_dim] = self.embeddings.dims();
        self.output.forward(self.input.forward(self.embeddings.val().reshape([n, heads * head_dim])).tanh())
    }

    /// Every layer's `(keys, values)`, each `[1, kv_heads, num_virtual_tokens, head_dim]`.
    pub fn keys_values(&self, site: &PrefixProjectionSite) -> Vec<(Tensor<B, 4>, Tensor<B, 4>)> {
        let n = self.len();
        let all = self.projected().reshape([n, site.layers * 2, site.kv_heads, site.head_dim]).permute([1, 2, 0, 3]);
        (0..site.layers).map(|l| (all.clone().narrow(0, 2 * l, 1), all.clone().narrow(0, 2 * l + 1, 1))).collect()
    }
}

impl<B: Backend> Tuner<B, PrefixProjectionSite> for PrefixProjection<B> {
    type Config = PrefixProjectionConfig;

    fn init(config: &PrefixProjectionConfig, base: &mut PrefixProjectionSite, path: &str) -> Result<Self> {
        let (d, device) = (base.token_dim(), Default::default());
        let hidden = config.encoder_hidden_size.unwrap_or(d);
        let width = base.layers.checked_mul(2 * d).filter(|_| d > 0).ok_or_else(|| PeftError::InvalidConfig(format!("`{path}`: {} layers of {d} key/value values", base.layers)))?;
        Ok(Self {
            embeddings: trainable(Tensor::random([config.num_virtual_tokens, base.kv_heads, base.head_dim], Distribution::Normal(0.0, config.init_std), &device)),
            input: LinearConfig::new(d, hidden).init(&device),
            output: LinearConfig::new(hidden, width).init(&device),
        })
    }

    fn method(&self) -> &'static str {
        "PREFIX_TUNING"
    }
}
