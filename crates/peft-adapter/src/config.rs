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

/// What the adapter reads.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum AdapterPlacement {
    /// `h + s·up(act(down(h)))` on the sub-layer output `h`.
    Sequential,
    /// `h + s·up(act(down(x)))` from the sub-layer input `x` (needs `d_in = d_out`).
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
}

impl BottleneckConfig {
    /// AdapterHub's `seq_bn` (Pfeiffer): after the feed-forward output only, relu, rf 16.
    pub fn pfeiffer(targets: Targeting) -> Self {
        Self::new(targets)
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
