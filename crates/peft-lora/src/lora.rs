//! The LoRA adapter for dense layers and embeddings, with DoRA.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::{embedding, linear};
use burn::tensor::{Int, Tensor};
use peft_core::{Combination, PeftError, Result, Tuner, TunerForward, flat_linear, frozen_like, trainable, upcast_half};

use crate::init::{check_rank, init_a, normal, pissa};
use crate::{LoraConfig, LoraInit};

/// A low-rank update `s·A·B` (Burn layout: `A [d_in, r]`, `B [r, d_out]`).
///
/// HF peft stores the transposes, `lora_A.weight [r, d_in]` and `lora_B.weight [d_out, r]`;
/// for embeddings `lora_embedding_A [r, vocab]` and `lora_embedding_B [dim, r]`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// Down-projection `[d_in, r]` (embeddings: `[vocab, r]`).
    pub a: Param<Tensor<B, 2>>,
    /// Up-projection `[r, d_out]`.
    pub b: Param<Tensor<B, 2>>,
    /// Optional bias of the LoRA branch `[d_out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// DoRA magnitude `[d_out]`.
    pub magnitude: Option<Param<Tensor<B, 1>>>,
    /// UniPELT's gate `d_in → 1` ([`LoraConfig::gating`]), when the adapter has one.
    pub gate: Option<Linear<B>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// `alpha/r`, or `alpha/sqrt(r)` with rsLoRA.
    pub scaling: f64,
    /// DoRA: the weight norm at merge time, needed to unmerge.
    #[module(skip)]
    merged_norm: Option<Tensor<B, 1>>,
}

impl<B: Backend> Lora<B> {
    /// Builds an adapter from explicit factors (Burn layout).
    pub fn from_factors(a: Tensor<B, 2>, b: Tensor<B, 2>, scaling: f64) -> Result<Self> {
        let [_, r] = a.dims();
        let [rb, _] = b.dims();
        if r != rb {
            return Err(PeftError::ShapeMismatch { name: "lora B".into(), expected: vec![r, b.dims()[1]], actual: b.dims().to_vec() });
        }
        Ok(Self {
            a: trainable(a),
            b: trainable(b),
            bias: None,
            magnitude: None,
            gate: None,
            dropout: DropoutConfig::new(0.0).init(),
            scaling,
            merged_norm: None,
        })
    }

    /// The adapter's weights in f32 when they are half precision (f16, bf16), as HF peft's
    /// `autocast_adapter_dtype` keeps them: Adam's second moments of small gradients underflow in
    /// f16. The frozen base still computes in its own type.
    pub fn autocast_adapter_dtype(mut self) -> Self {
        self.a = upcast_half(self.a);
        self.b = upcast_half(self.b);
        self.bias = self.bias.map(upcast_half);
        self.magnitude = self.magnitude.map(upcast_half);
        self
    }

    /// The rank.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// `s·A·B`, `[d_in, d_out]`: the dense update, for merging only.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scaling)
    }

    /// `s·(x·A)·B (+ bias)` computed on the activation side: `[..., d_in] -> [..., d_out]`,
    /// over the tokens flattened into rows (one product for each factor's gradient).
    pub(crate) fn low_rank<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.up(flat_linear(x, self.a.val(), None))
    }

    /// The update for layer input `input` (`x`: the input after dropout): `s·(x·A)·B (+ bias)`,
    /// times the gate's value for `input` when the adapter is gated.
    pub(crate) fn update<const D: usize>(&self, input: &Tensor<B, D>, x: Tensor<B, D>) -> Tensor<B, D> {
        let update = self.low_rank(x);
        match &self.gate {
            Some(gate) => update * peft_core::gate::gate_value(gate, input),
            None => update,
        }
    }

    /// Refuses what a gated adapter cannot do (its update depends on the input).
    pub(crate) fn check_ungated(&self, what: &str, path: &str) -> Result<()> {
        match self.gate {
            Some(_) => Err(PeftError::NotMergeable { adapter: String::new(), method: "LORA", path: path.into(), reason: format!(": a gated LoRA's update depends on the input, so it cannot {what}") }),
            None => Ok(()),
        }
    }

    /// `s·h·B (+ bias)`: `[..., r] -> [..., d_out]`. The scaling multiplies `B` (`[r, d_out]`)
    /// rather than the product (`[..., d_out]`).
    fn up<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        let h = flat_linear(h, self.b.val().mul_scalar(self.scaling), None);
        match &self.bias {
            Some(bias) => h + broadcast_last(bias.val()),
            None => h,
        }
    }

    /// DoRA's per-output norm of `W + s·A·B` (W `[d_in, d_out]`), detached: `[d_out]`.
    fn weight_norm(&self, weight: Tensor<B, 2>) -> Tensor<B, 1> {
        column_norm(weight + self.delta_weight().detach())
    }

    /// Replaces the factors' values, keeping parameter ids (checks shapes).
    pub fn load_factors(mut self, a: Tensor<B, 2>, b: Tensor<B, 2>) -> Result<Self> {
        check_shape("lora A", &self.a.dims(), &a.dims())?;
        check_shape("lora B", &self.b.dims(), &b.dims())?;
        self.a = Param::initialized(self.a.id, a.require_grad());
        self.b = Param::initialized(self.b.id, b.require_grad());
        Ok(self)
    }
}

/// Checks that `actual` equals `expected`, naming the tensor otherwise.
pub fn check_shape(name: &str, expected: &[usize], actual: &[usize]) -> Result<()> {
    if expected != actual {
        return Err(PeftError::ShapeMismatch { name: name.into(), expected: expected.to_vec(), actual: actual.to_vec() });
    }
    Ok(())
}

/// Reshapes a `[d]` vector to `[1, ..., 1, d]` to broadcast over the last dimension.
pub fn broadcast_last<B: Backend, const D: usize>(v: Tensor<B, 1>) -> Tensor<B, D> {
    let mut dims = [1usize; D];
    dims[D - 1] = v.dims()[0];
    v.reshape(dims)
}

/// The detached norm of each column of `w` `[d_in, d_out]`: `[d_out]`.
fn column_norm<B: Backend>(w: Tensor<B, 2>) -> Tensor<B, 1> {
    w.square().sum_dim(0).sqrt().squeeze_dim(0).detach()
}

/// Builds the adapter for a weight of `dims` (`[d_in, d_out]`) on `device`. `weight` is called
/// only when the values are needed (PiSSA, DoRA), so a 4-bit base is never made dense here.
pub(crate) fn build<B: Backend>(
    config: &LoraConfig,
    dims: [usize; 2],
    device: &B::Device,
    weight: impl FnOnce() -> Tensor<B, 2>,
    path: &str,
    embedding: bool,
) -> Result<(Lora<B>, Option<Tensor<B, 2>>)> {
    let (r, scaling) = config.rank_and_scaling(path)?;
    let [d_in, d_out] = dims;
    check_rank(path, r, d_in, d_out)?;
    let values = (config.init == LoraInit::Pissa || config.use_dora).then(weight);
    let mut residual = None;
    let (a, b) = match (config.init, embedding, &values) {
        (LoraInit::Pissa, _, Some(values)) => {
            let (a, b, res) = pissa(values.clone(), r, scaling, path)?;
            residual = Some(res);
            (a, b)
        }
        (_, true, _) => (Tensor::zeros([d_in, r], device), normal([r, d_out], 1.0, device)),
        _ => (init_a(config.init, [d_in, r], d_in, r, device), Tensor::zeros([r, d_out], device)),
    };
    let mut lora = Lora::from_factors(a, b, scaling)?;
    lora.dropout = DropoutConfig::new(config.dropout).init();
    if config.bias {
        lora.bias = Some(trainable(Tensor::zeros([d_out], device)));
    }
    if config.gating {
        // The gate takes the place of alpha/r, as in AdapterHub.
        lora.gate = Some(peft_core::gate::new_gate(d_in, device));
        lora.scaling = 1.0;
    }
    if config.use_dora
        && let Some(base) = residual.clone().or(values)
    {
        lora.magnitude = Some(trainable(lora.weight_norm(base)));
    }
    Ok((lora, residual))
}

impl<B: Backend> Tuner<B, Linear<B>> for Lora<B> {
    type Config = LoraConfig;

    fn init(config: &LoraConfig, base: &mut Linear<B>, path: &str) -> Result<Self> {
        let (dims, device) = (base.weight.dims(), base.weight.device());
        let (lora, residual) = build(config, dims, &device, || base.weight.val(), path, false)?;
        // PiSSA moves the principal part out of the frozen weight into the adapter.
        if let Some(residual) = residual {
            base.weight = frozen_like(&base.weight, residual);
        }
        Ok(lora)
    }

    fn method(&self) -> &'static str {
        "LORA"
    }

    fn merge(&mut self, mut base: Linear<B>, path: &str) -> Result<Linear<B>> {
        self.check_ungated("merge", path)?;
        let weight = base.weight.val();
        let merged = match &self.magnitude {
            None => weight + self.delta_weight(),
            Some(m) => {
                let updated = weight + self.delta_weight();
                let norm = column_norm(updated.clone());
                let factor = m.val() / norm.clone();
                self.merged_norm = Some(norm);
                updated * factor.unsqueeze_dim(0)
            }
        };
        base.weight = frozen_like(&base.weight, merged);
        if let Some(lb) = &self.bias {
            let Some(bias) = &base.bias else {
                let reason = ": the layer has no bias to fold the LoRA bias into".into();
                return Err(PeftError::NotMergeable { adapter: String::new(), method: "LORA", path: path.into(), reason });
            };
            base.bias = Some(frozen_like(bias, bias.val() + lb.val()));
        }
        Ok(base)
    }

    fn unmerge(&mut self, mut base: Linear<B>, _path: &str) -> Result<Linear<B>> {
        let weight = base.weight.val();
        let original = match (&self.magnitude, self.merged_norm.take()) {
            (Some(m), Some(norm)) => weight / (m.val() / norm).unsqueeze_dim(0) - self.delta_weight(),
            _ => weight - self.delta_weight(),
        };
        base.weight = frozen_like(&base.weight, original);
        if let (Some(lb), Some(bias)) = (&self.bias, &base.bias) {
            base.bias = Some(frozen_like(bias, bias.val() - lb.val()));
        }
        Ok(base)
    }

    fn combine(parts: &[(&Self, f64)], how: Combination) -> Result<Self> {
        crate::combine::combine(parts, how)
    }
}

impl<B: Backend, const D: usize> TunerForward<B, Linear<B>, Tensor<B, D>> for Lora<B> {
    /// `h + s·B(A(dropout(x)))` (gated: `h + g(x)·B(A(dropout(x)))`), or DoRA's `h + (m/‖W+sBA‖ − 1)·(x·W) + m/‖W+sBA‖·s·B(A(x))`.
    /// `x: [..., d_in]`, `h: [..., d_out]`.
    fn post(&self, base: &Linear<B>, input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
        let x = self.dropout.forward(input.clone());
        match &self.magnitude {
            None => output + self.update(input, x),
            Some(m) => {
                let weight = base.weight.val();
                let scale = broadcast_last::<B, D>(m.val() / self.weight_norm(weight.clone()));
                let base_no_bias = linear(x.clone(), weight, None);
                let lora = self.low_rank(x);
                output + (scale.clone() - 1.0) * base_no_bias + scale * lora
            }
        }
    }
}

impl<B: Backend> Tuner<B, Embedding<B>> for Lora<B> {
    type Config = LoraConfig;

    fn init(config: &LoraConfig, base: &mut Embedding<B>, path: &str) -> Result<Self> {
        config.supported_on(path, false, true, false, false)?;
        Ok(build(config, base.weight.dims(), &base.weight.device(), || base.weight.val(), path, true)?.0)
    }

    fn method(&self) -> &'static str {
        "LORA"
    }

    fn merge(&mut self, mut base: Embedding<B>, _path: &str) -> Result<Embedding<B>> {
        base.weight = frozen_like(&base.weight, base.weight.val() + self.delta_weight());
        Ok(base)
    }

    fn unmerge(&mut self, mut base: Embedding<B>, _path: &str) -> Result<Embedding<B>> {
        base.weight = frozen_like(&base.weight, base.weight.val() - self.delta_weight());
        Ok(base)
    }

    fn combine(parts: &[(&Self, f64)], how: Combination) -> Result<Self> {
        crate::combine::combine(parts, how)
    }
}

impl<B: Backend> TunerForward<B, Embedding<B>, Tensor<B, 2, Int>> for Lora<B> {
    /// `h + s·embedding(A, ids)·B`; `ids: [batch, seq]`, `h: [batch, seq, dim]`.
    fn post(&self, _base: &Embedding<B>, input: &Tensor<B, 2, Int>, output: Tensor<B, 3>) -> Tensor<B, 3> {
        output + self.up(embedding(self.a.val(), input.clone()))
    }
}
