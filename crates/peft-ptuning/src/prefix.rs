//! The prefix: learned keys and values that extend an attention layer's own.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{Result, Tuner, TunerForward, trainable};

use crate::{KvSite, PrefixConfig};

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
    type Config = PrefixConfig;

    fn init(config: &PrefixConfig, base: &mut KvSite, _path: &str) -> Result<Self> {
        let shape = [base.kv_heads, config.num_virtual_tokens, base.head_dim];
        let device = Default::default();
        let init = || trainable(Tensor::random(shape, Distribution::Normal(0.0, config.init_std), &device));
        Ok(Self { keys: init(), values: init() })
    }

    fn method(&self) -> &'static str {
        "PREFIX_TUNING"
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
