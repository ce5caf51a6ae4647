//! Configs of the LoRA family, with HF peft's defaults.

use std::any::Any;
use std::collections::BTreeMap;

use burn::config::Config;
use peft_core::hf::lora_rank_and_scaling;
use peft_core::{MethodConfig, PeftError, TargetModules, Targeting};

/// How LoRA's `A` and `B` start.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum LoraInit {
    /// HF peft's default: `A` kaiming-uniform with `a = sqrt(5)` (so `U(±1/sqrt(fan_in))`),
    /// `B = 0`. Embeddings: `A = 0`, `B ~ N(0, 1)`.
    Default,
    /// `A ~ N(0, std = 1/r)` as HF peft's `"gaussian"`, `B = 0`.
    Gaussian,
    /// PiSSA: `A`, `B` from the top-`r` singular triplets of the base weight, which keeps the
    /// residual, so the model is unchanged at start.
    Pissa,
}

/// LoRA: `y = base(x) + s·B(A(dropout(x)))`, with `s = alpha/r` (`alpha/sqrt(r)` with rsLoRA).
///
/// Defaults follow HF peft 0.21: `r = 8`, `alpha = 8`, no dropout, no bias, default init.
#[derive(Config, Debug)]
pub struct LoraConfig {
    /// Which layers to adapt.
    pub targets: Targeting,
    /// Rank of the update.
    #[config(default = 8)]
    pub r: usize,
    /// Scale numerator.
    #[config(default = 8.0)]
    pub alpha: f64,
    /// Dropout probability on the adapter input, in training only.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// rsLoRA: scale by `alpha/sqrt(r)`.
    #[config(default = false)]
    pub use_rslora: bool,
    /// DoRA: learn a magnitude vector and apply LoRA to the direction.
    #[config(default = false)]
    pub use_dora: bool,
    /// A trainable bias on the LoRA branch (HF peft's `lora_bias`).
    #[config(default = false)]
    pub bias: bool,
    /// Initialization of `A` and `B`.
    #[config(default = "LoraInit::Default")]
    pub init: LoraInit,
    /// Per-path ranks: regex keys matched against the end of the module path.
    #[config(default = "BTreeMap::new()")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-path alphas: regex keys matched against the end of the module path.
    #[config(default = "BTreeMap::new()")]
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl LoraConfig {
    /// Rank and scaling for the layer at `path`, after the patterns.
    pub fn rank_and_scaling(&self, path: &str) -> peft_core::Result<(usize, f64)> {
        let (r, scaling) = lora_rank_and_scaling(path, self.r, self.alpha, &self.rank_pattern, &self.alpha_pattern, self.use_rslora)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(PeftError::InvalidConfig(format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        if !scaling.is_finite() {
            return Err(PeftError::InvalidConfig(format!("alpha must be finite, got scaling {scaling} at `{path}`")));
        }
        if self.use_dora && self.bias {
            return Err(PeftError::InvalidConfig("DoRA does not support a LoRA bias".into()));
        }
        Ok((r, scaling))
    }

    /// `config` as a LoRA config, if it is one.
    pub(crate) fn from_any(config: &dyn Any) -> Option<&Self> {
        config.downcast_ref::<Self>()
    }
}

impl MethodConfig for LoraConfig {
    fn peft_type(&self) -> &'static str {
        "LORA"
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
}

/// IA3: learned scaling vectors, `x ⊙ l` before feed-forward layers and `h ⊙ l` after others.
#[derive(Config, Debug)]
pub struct Ia3Config {
    /// Which layers to adapt.
    pub targets: Targeting,
    /// Which of the targeted layers are feed-forward (their input is scaled). Default: none.
    #[config(default = "TargetModules::Names(Vec::new())")]
    pub feedforward_modules: TargetModules,
}

impl MethodConfig for Ia3Config {
    fn peft_type(&self) -> &'static str {
        "IA3"
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
}
