//! The bottleneck adapter module and its place in the one trait.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, relu, silu};
use burn::tensor::backend::Backend;
use peft_core::{Adaptable, Layer, PeftError, Residual, Result, Tuner, TunerForward, linear_forward};

use crate::{AdapterActivation, AdapterPlacement, BottleneckConfig};

/// `s·up(act(down(·)))`, added to a sub-layer's output.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// `d → d/rf`, with bias (AdapterHub's `adapter_down.0`).
    pub down: Linear<B>,
    /// `d/rf → d`, with bias (AdapterHub's `adapter_up`).
    pub up: Linear<B>,
    /// `d → 1`, with bias: the gate (UniPELT; AdapterHub's `gate`), when the adapter has one.
    pub gate: Option<Linear<B>>,
    /// The non-linearity.
    #[module(skip)]
    pub activation: AdapterActivation,
    /// What it reads.
    #[module(skip)]
    pub placement: AdapterPlacement,
    /// Output scale.
    pub scaling: f64,
}

impl<B: Backend> Bottleneck<B> {
    /// `s·up(act(down(h)))`, times the gate when there is one: `[..., d] -> [..., d]`.
    pub fn delta<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        let gate = self.gate_value(&h);
        let z = linear_forward(&self.down, h);
        let z = match self.activation {
            AdapterActivation::Relu => relu(z),
            AdapterActivation::Swish => silu(z),
            AdapterActivation::Gelu => gelu(z),
        };
        let z = linear_forward(&self.up, z).mul_scalar(self.scaling);
        match gate {
            Some(g) => z * g,
            None => z,
        }
    }

    /// The gate's value for input `h` ([`peft_core::gate::gate_value`]: one per example).
    pub fn gate_value<const D: usize>(&self, h: &Tensor<B, D>) -> Option<Tensor<B, D>> {
        Some(peft_core::gate::gate_value(self.gate.as_ref()?, h))
    }

    fn build(config: &BottleneckConfig, d: usize, path: &str, device: &B::Device) -> Result<Self> {
        if config.reduction_factor == 0 || d / config.reduction_factor == 0 {
            return Err(PeftError::InvalidConfig(format!(
                "reduction factor {} leaves no bottleneck width for `{path}` (d = {d})",
                config.reduction_factor
            )));
        }
        let width = d / config.reduction_factor;
        let mut up = LinearConfig::new(width, d).init(device);
        up.weight = Param::from_tensor(Tensor::zeros([width, d], device));
        up.bias = Some(Param::from_tensor(Tensor::zeros([d], device)));
        let gate = config.gating.then(|| peft_core::gate::new_gate(d, device));
        Ok(Self {
            down: LinearConfig::new(d, width).init(device),
            up,
            gate,
            activation: config.activation,
            placement: config.placement,
            scaling: config.scaling,
        })
    }
}

impl<B: Backend, L: Adaptable<B>> Tuner<B, L> for Bottleneck<B> {
    type Config = BottleneckConfig;

    fn init(config: &BottleneckConfig, base: &mut L, path: &str) -> Result<Self> {
        let d = base.output_features().ok_or_else(|| PeftError::NoOutputWidth { path: path.into() })?;
        let device = base.device().ok_or_else(|| PeftError::NoParameters(path.into()))?;
        Self::build(config, d, path, &device)
    }

    fn method(&self) -> &'static str {
        "BOTTLENECK"
    }
}

impl<B: Backend, L: Adaptable<B> + Layer<B, Tensor<B, D>, Output = Tensor<B, D>>, const D: usize> TunerForward<B, L, Tensor<B, D>>
    for Bottleneck<B>
{
    /// Sequential (and after-norm): `h + s·up(act(down(h)))`; parallel: `h + s·up(act(down(x)))`.
    /// `x`, `h: [..., d]`.
    fn post(&self, _base: &L, input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
        let source = if self.placement == AdapterPlacement::Parallel { input.clone() } else { output.clone() };
        output + self.delta(source)
    }
}

impl<B: Backend, L: Adaptable<B> + Layer<B, Residual<B, D>, Output = Tensor<B, D>>, const D: usize> TunerForward<B, L, Residual<B, D>> for Bottleneck<B> {
    /// At the step `close(h + r)` that ends a residual sub-layer (an add, or a norm after it),
    /// adds `s·up(act(down(source)))` to `h`, so that the layer gives `close(h + r +
    /// s·f(source))` with `source` = `h` (sequential), `close(h + r)` (after the norm) or `r`
    /// (parallel): AdapterHub's bottleneck layer with `residual_before_ln` and
    /// `original_ln_after`. `h`, `r: [..., d]`.
    fn pre(&self, base: &L, input: Residual<B, D>) -> Residual<B, D> {
        let source = match self.placement {
            AdapterPlacement::Sequential => input.hidden.clone(),
            AdapterPlacement::AfterNorm => base.forward_base(input.clone()),
            AdapterPlacement::Parallel => input.residual.clone(),
        };
        Residual { hidden: input.hidden + self.delta(source), residual: input.residual }
    }
}
