//! IA3's config, with HF peft's defaults.

use burn::config::Config;
use peft_core::{MethodConfig, Site, TargetModules, Targeting};

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
    fn site(&self) -> Site {
        Site::Weight
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> peft_core::Result<()> {
        // A bad feed-forward pattern is named before any layer is built.
        self.feedforward_modules.matches("", peft_core::LayerKind::Linear).map(|_| ())
    }
}
