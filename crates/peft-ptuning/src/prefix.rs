//! The prefix: learned keys and values that extend an attention layer's own.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::gate::{gate_value, new_gate};
use peft_core::{PeftError, Result, Tuner, TunerForward, trainable};

use crate::{AttentionKv, KvSite, PrefixConfig};

/// Learned keys and values `[kv_heads, num_virtual_tokens, head_dim]`.
#[derive(Module, Debug)]
pub struct Prefix<B: Backend> {
    /// Prefix keys.
    pub keys: Param<Tensor<B, 3>>,
    /// Prefix values.
    pub values: Param<Tensor<B, 3>>,
    /// UniPELT's gate `input_dim → 1` ([`PrefixConfig::gating`]), when the prefix has one.
    pub gate: Option<Linear<B>>,
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

    fn init(config: &PrefixConfig, base: &mut KvSite, path: &str) -> Result<Self> {
        let shape = [base.kv_heads, config.num_virtual_tokens, base.head_dim];
        let device = Default::default();
        let init = || trainable(Tensor::random(shape, Distribution::Normal(0.0, config.init_std), &device));
        let gate = match (config.gating, base.input_dim) {
            (false, _) => None,
            (true, 0) => return Err(PeftError::NotSupportedOn { feature: "a prefix gate (the site's input_dim is 0)".into(), path: path.into() }),
            (true, d) => Some(new_gate(d, &device)),
        };
        Ok(Self { keys: init(), values: init(), gate })
    }

    fn method(&self) -> &'static str {
        "PREFIX_TUNING"
    }
}

impl<B: Backend> TunerForward<B, KvSite, AttentionKv<B>> for Prefix<B> {
    /// Prepends the prefix: `[batch, heads, seq, hd] -> [batch, heads, nvt + seq, hd]`; a gated
    /// prefix first times its gate's value for each example's layer input.
    fn post(&self, _base: &KvSite, input: &AttentionKv<B>, output: (Tensor<B, 4>, Tensor<B, 4>)) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let (k, v) = output;
        let [batch, heads, _, head_dim] = k.dims();
        let expand = |p: Tensor<B, 3>| p.to_device(&k.device()).unsqueeze_dim::<4>(0).expand([batch, heads, self.len(), head_dim]);
        let (mut pk, mut pv) = (expand(self.keys.val()), expand(self.values.val()));
        if let Some(gate) = &self.gate {
            let g: Tensor<B, 4> = gate_value(gate, &input.input).unsqueeze_dim(1);
            (pk, pv) = (pk * g.clone(), pv * g);
        }
        (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2))
    }
}
