//! Bottleneck adapter configs, with AdapterHub's presets.

use burn::config::Config;
use peft_core::{MethodConfig, PeftError, Site, Targeting};

/// The non-linearity between the projections.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum AdapterActivation {
    /// `max(0, x)`.
    Relu,
    /// `x·σ(x)` (AdapterHub's `swish`).
    Swish,
    /// GELU.
    Gelu,
}

/// What the adapter reads. On a sub-layer `L` the adapter adds to its output `h`; on the step
/// closing a residual sub-layer ([`peft_core::Residual`]: Llama's `h + r`, BERT's
/// `LayerNorm(h + r)`) it adds to `h` before that step, as AdapterHub does:
/// `close(h + r + s·f(source))`.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum AdapterPlacement {
    /// Reads the sub-layer's output `h`: `h + s·f(h)` (Houlsby; AdapterHub's
    /// `original_ln_before = false`).
    Sequential,
    /// Reads the sub-layer's output after its residual (and norm): `norm(h + r)`, or `h + r` in a
    /// pre-norm model (Pfeiffer; AdapterHub's `original_ln_before = true`). On a sub-layer `L`,
    /// as `Sequential`.
    AfterNorm,
    /// Reads the sub-layer's input: `x` on a sub-layer `L` (needs `d_in = d_out`), the residual
    /// input `r` at a norm (He et al.'s parallel adapter; AdapterHub's `is_parallel`).
    Parallel,
}

/// A bottleneck adapter. The up-projection starts at zero, so the model is unchanged at start.
#[derive(Config, Debug)]
pub struct BottleneckConfig {
    /// Which sub-layers carry an adapter.
    pub targets: Targeting,
    /// `d / bottleneck width`.
    #[config(default = 16)]
    pub reduction_factor: usize,
    /// The non-linearity.
    #[config(default = "AdapterActivation::Relu")]
    pub activation: AdapterActivation,
    /// Sequential or parallel.
    #[config(default = "AdapterPlacement::Sequential")]
    pub placement: AdapterPlacement,
    /// Output scale `s`.
    #[config(default = 1.0)]
    pub scaling: f64,
    /// Multiply the output by a learned gate `σ(gate(source))`, averaged over the sequence
    /// (UniPELT; AdapterHub's `use_gating`). For encoders: the average spans later positions.
    #[config(default = false)]
    pub gating: bool,
}

impl BottleneckConfig {
    /// AdapterHub's `seq_bn` (Pfeiffer): reads the feed-forward block's normed output (target
    /// the feed-forward output only), relu, rf 16.
    pub fn pfeiffer(targets: Targeting) -> Self {
        Self::new(targets).with_placement(AdapterPlacement::AfterNorm)
    }

    /// AdapterHub's `double_seq_bn` (Houlsby): target both the attention and the feed-forward
    /// outputs; swish, rf 16.
    pub fn houlsby(targets: Targeting) -> Self {
        Self::new(targets).with_activation(AdapterActivation::Swish)
    }

    /// AdapterHub's `par_bn`: parallel, relu, rf 2, scaling 4.
    pub fn parallel(targets: Targeting) -> Self {
        Self::new(targets).with_reduction_factor(2).with_placement(AdapterPlacement::Parallel).with_scaling(4.0)
    }
}

impl MethodConfig for BottleneckConfig {
    fn peft_type(&self) -> &'static str {
        "BOTTLENECK"
    }
    fn site(&self) -> Site {
        Site::SubLayer
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> peft_core::Result<()> {
        if !self.scaling.is_finite() {
            return Err(PeftError::InvalidConfig(format!("scaling must be finite, got {}", self.scaling)));
        }
        Ok(())
    }
}
