//! LoRA's config, with HF peft's defaults, and LoRA's one scaling rule.

use std::collections::BTreeMap;

use burn::config::Config;
use peft_core::targeting::pattern_value;
use peft_core::{MethodConfig, PeftError, Site, Targeting};

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
///
/// ```
/// use peft_lora::LoraConfig;
/// use peft_core::{TargetModules, Targeting};
///
/// let config = LoraConfig::new(Targeting::new(TargetModules::AllLinear)).with_r(16).with_alpha(32.0);
/// assert_eq!(config.rank_and_scaling("layers.0.q_proj").unwrap(), (16, 2.0));
/// let rs = config.clone().with_use_rslora(true);
/// assert_eq!(rs.rank_and_scaling("layers.0.q_proj").unwrap(), (16, 8.0));
/// ```
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
    /// UniPELT's gate (AdapterHub's LoRA `use_gating`): the update is multiplied by
    /// `σ(gate(x))` averaged over the sequence ([`peft_core::gate`]) in place of `alpha/r`. The
    /// update then depends on the input, so a gated LoRA does not merge, combine or save in
    /// peft's format (use `peft_core::adapter_file`). Dense layers only.
    #[config(default = false)]
    pub gating: bool,
    /// Initialization of `A` and `B`.
    #[config(default = "LoraInit::Default")]
    pub init: LoraInit,
    /// Per-path ranks: regex keys matched against the end of the module path.
    #[config(default = "BTreeMap::new()")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-path alphas: regex keys matched against the end of the module path.
    #[config(default = "BTreeMap::new()")]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Exact module paths and their `(rank, alpha)`, before the patterns: how an adapter read
    /// from a file keeps each module's rank.
    #[config(default = "BTreeMap::new()")]
    pub module_ranks: BTreeMap<String, (usize, f64)>,
}

/// LoRA's scaling, HF peft's rule: `alpha/r`, or `alpha/sqrt(r)` with rsLoRA.
pub fn lora_scaling(r: usize, alpha: f64, use_rslora: bool) -> f64 {
    if use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }
}

impl LoraConfig {
    /// Rank and alpha for the layer at `path`: its entry in `module_ranks`, else the patterns,
    /// else `r` and `alpha`.
    pub fn rank_and_alpha(&self, path: &str) -> peft_core::Result<(usize, f64)> {
        let (r, alpha) = match self.module_ranks.get(path) {
            Some(&pair) => pair,
            None => (pattern_value(&self.rank_pattern, path)?.unwrap_or(self.r), pattern_value(&self.alpha_pattern, path)?.unwrap_or(self.alpha)),
        };
        if r == 0 {
            return Err(PeftError::ZeroRank { path: path.into() });
        }
        Ok((r, alpha))
    }

    /// Rank and scaling for the layer at `path`.
    pub fn rank_and_scaling(&self, path: &str) -> peft_core::Result<(usize, f64)> {
        let (r, alpha) = self.rank_and_alpha(path)?;
        let scaling = lora_scaling(r, alpha, self.use_rslora);
        if !scaling.is_finite() {
            return Err(PeftError::InvalidConfig(format!("alpha must be finite, got scaling {scaling} at `{path}`")));
        }
        Ok((r, scaling))
    }

    /// Refuses, naming the layer, the first of DoRA, a LoRA bias and PiSSA that this config asks
    /// for and the layer at `path` does not support (the flags say which it supports).
    pub(crate) fn supported_on(&self, path: &str, dora: bool, bias: bool, pissa: bool, gating: bool) -> peft_core::Result<()> {
        let asked = [("DoRA", self.use_dora, dora), ("a LoRA bias", self.bias, bias), ("PiSSA", self.init == LoraInit::Pissa, pissa), ("a LoRA gate", self.gating, gating)];
        match asked.into_iter().find(|(_, on, ok)| *on && !*ok) {
            Some((feature, ..)) => Err(PeftError::NotSupportedOn { feature: feature.into(), path: path.into() }),
            None => Ok(()),
        }
    }
}

impl MethodConfig for LoraConfig {
    fn peft_type(&self) -> &'static str {
        "LORA"
    }
    fn site(&self) -> Site {
        Site::Weight
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> peft_core::Result<()> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(PeftError::InvalidConfig(format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        if self.use_dora && self.gating {
            return Err(PeftError::InvalidConfig("DoRA has no gated form (gating is AdapterHub's option for plain LoRA)".into()));
        }
        if self.use_dora && self.bias {
            return Err(PeftError::InvalidConfig("DoRA does not support a LoRA bias".into()));
        }
        // Compiles every pattern once, so that a bad one is named before any layer is built.
        pattern_value(&self.rank_pattern, "")?;
        pattern_value(&self.alpha_pattern, "")?;
        Ok(())
    }
}
