//! The key/value site and the prefix that extends it.

use std::any::Any;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{Adaptable, Layer, LayerKind, MethodConfig, PeftError, Site, Targeting, Tuner, TunerForward, trainable};

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

/// Prefix tuning: `num_virtual_tokens` learned keys and values per targeted attention layer.
#[derive(Config, Debug)]
pub struct PrefixConfig {
    /// Which key/value sites (attention layers) get a prefix.
    pub targets: Targeting,
    /// Number of virtual tokens.
    #[config(default = 10)]
    pub num_virtual_tokens: usize,
    /// Standard deviation of the normal init (HF peft's embedding default is 1).
    #[config(default = 1.0)]
    pub init_std: f64,
}

impl MethodConfig for PrefixConfig {
    fn peft_type(&self) -> &'static str {
        "PREFIX_TUNING"
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
}

/// Learned keys and values `[kv_heads, num_virtual_tokens, head_dim]`.
#[derive(Module, Debug)]
pub struct Prefix<B: Backend> {
    /// Prefix keys.
    pub keys: Param<Tensor<B, 3>>,
    /// Prefix values.
    pub values: Param<Tensor<B, 3>>,
}

impl<B: Backend> Prefix<B> {
    /// Number of virtual tokens.
    pub fn len(&self) -> usize {
        self.keys.dims()[1]
    }

    /// Whether the prefix has no tokens (never true for a built prefix).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Tuner<B, KvSite> for Prefix<B> {
    const SITE: Site = Site::KeyValue;

    fn accepts(config: &dyn Any) -> bool {
        config.is::<PrefixConfig>()
    }

    fn from_config(config: &dyn Any, base: &mut KvSite, path: &str) -> Option<peft_core::Result<Self>> {
        let config = config.downcast_ref::<PrefixConfig>()?;
        if config.num_virtual_tokens == 0 {
            return Some(Err(PeftError::InvalidConfig(format!("num_virtual_tokens is 0 for `{path}`"))));
        }
        let shape = [base.kv_heads, config.num_virtual_tokens, base.head_dim];
        let device = Default::default();
        let init = || trainable(Tensor::random(shape, Distribution::Normal(0.0, config.init_std), &device));
        Some(Ok(Self { keys: init(), values: init() }))
    }
}

impl<B: Backend> TunerForward<B, KvSite, (Tensor<B, 4>, Tensor<B, 4>)> for Prefix<B> {
    /// Prepends the prefix: `[batch, heads, seq, hd] -> [batch, heads, nvt + seq, hd]`.
    fn post(&self, _base: &KvSite, _input: &(Tensor<B, 4>, Tensor<B, 4>), output: (Tensor<B, 4>, Tensor<B, 4>)) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = output;
        let [batch, heads, _, head_dim] = k.dims();
        let expand = |p: Tensor<B, 3>| p.to_device(&k.device()).unsqueeze_dim::<4>(0).expand([batch, heads, self.len(), head_dim]);
        let pk = expand(self.keys.val());
        let pv = expand(self.values.val());
        (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2))
    }
}
