//! The configs of prefix tuning and prompt tuning, with HF peft's defaults.

use burn::config::Config;
use peft_core::{MethodConfig, PeftError, Site, Targeting};

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
    /// UniPELT's gate (AdapterHub's prefix `use_gating` with its default `shared_gating`): the
    /// prefix keys and values are multiplied by `σ(gate(x))`, `x` the attention layer's input,
    /// averaged over the sequence ([`peft_core::gate`]). Not in peft's format (save it with
    /// `peft_core::adapter_file`). The gate of a cached decoding pass is the first pass's.
    #[config(default = false)]
    pub gating: bool,
}

impl MethodConfig for PrefixConfig {
    fn peft_type(&self) -> &'static str {
        "PREFIX_TUNING"
    }
    fn site(&self) -> Site {
        Site::KeyValue
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> peft_core::Result<()> {
        if self.num_virtual_tokens == 0 {
            return Err(PeftError::InvalidConfig("num_virtual_tokens is 0".into()));
        }
        Ok(())
    }
}

/// P-Tuning's reparameterization (Liu et al.; HF peft's `P_TUNING`): while training, the virtual
/// tokens are the output of an encoder over their embeddings; saved, they are that output, as
/// peft saves them.
///
/// - [`PromptEncoderKind::Mlp`] (peft's `encoder_reparameterization_type = "MLP"`, the default):
///   `Linear(d, h) → ReLU → Linear(h, h) → ReLU → Linear(h, d)`.
/// - [`PromptEncoderKind::Lstm`] (`"LSTM"`): a bidirectional LSTM of `num_layers` layers and width
///   `h` over the virtual tokens as one sequence, then `Linear(2h, 2h) → ReLU → Linear(2h, d)`.
#[derive(Config, Debug)]
pub struct PromptEncoderConfig {
    /// The hidden width `h`; `None`: the embedding width (peft's default).
    pub hidden_size: Option<usize>,
    /// The encoder.
    #[config(default = "PromptEncoderKind::Mlp")]
    pub kind: PromptEncoderKind,
    /// LSTM layers (peft's `encoder_num_layers`; the MLP always has three linear layers).
    #[config(default = 2)]
    pub num_layers: usize,
}

/// P-Tuning's encoder type (peft's `encoder_reparameterization_type`).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PromptEncoderKind {
    /// Three linear layers with ReLU between.
    Mlp,
    /// A bidirectional LSTM, then two linear layers with ReLU between.
    Lstm,
}

impl PromptEncoderKind {
    /// peft's name for it.
    pub fn peft_name(self) -> &'static str {
        match self {
            Self::Mlp => "MLP",
            Self::Lstm => "LSTM",
        }
    }
}

/// Most layers of P-Tuning's LSTM.
pub const MAX_LSTM_LAYERS: usize = 64;

/// Prompt tuning (Lester et al.): `num_virtual_tokens` learned input embeddings before the tokens;
/// with an `encoder`, P-Tuning.
#[derive(Config, Debug)]
pub struct PromptTuningConfig {
    /// Which prompt sites get the virtual tokens (the reference decoders have one, `prompt`).
    pub targets: Targeting,
    /// Number of virtual tokens.
    #[config(default = 10)]
    pub num_virtual_tokens: usize,
    /// Standard deviation of the normal init (HF peft's `RANDOM` init: an embedding's, 1).
    #[config(default = 1.0)]
    pub init_std: f64,
    /// P-Tuning's MLP over the embeddings; `None`: plain prompt tuning.
    #[config(default = "None")]
    pub encoder: Option<PromptEncoderConfig>,
}

impl MethodConfig for PromptTuningConfig {
    fn peft_type(&self) -> &'static str {
        if self.encoder.is_some() { "P_TUNING" } else { "PROMPT_TUNING" }
    }
    fn site(&self) -> Site {
        Site::Prompt
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> peft_core::Result<()> {
        if self.num_virtual_tokens == 0 {
            return Err(PeftError::InvalidConfig("num_virtual_tokens is 0".into()));
        }
        if !(self.init_std >= 0.0 && self.init_std.is_finite()) {
            return Err(PeftError::InvalidConfig(format!("init_std must be finite and at least 0, got {}", self.init_std)));
        }
        if self.encoder.as_ref().and_then(|e| e.hidden_size) == Some(0) {
            return Err(PeftError::InvalidConfig("the prompt encoder's hidden_size is 0".into()));
        }
        if self.encoder.as_ref().is_some_and(|e| e.kind == PromptEncoderKind::Lstm && !(1..=MAX_LSTM_LAYERS).contains(&e.num_layers)) {
            return Err(PeftError::InvalidConfig(format!("the prompt encoder's LSTM needs 1 to {MAX_LSTM_LAYERS} layers")));
        }
        Ok(())
    }
}

/// Prefix tuning reparameterized as peft's `prefix_projection` (P-Tuning v2): while training,
/// every attention layer's prefix comes from one MLP,
/// `Linear(token_dim, h) → Tanh → Linear(h, layers·2·token_dim)` over `num_virtual_tokens` learned
/// embeddings (`token_dim` = key/value heads × head width). Saved, it is that output, as peft
/// saves it; `eject` turns it into a plain prefix with the same outputs.
#[derive(Config, Debug)]
pub struct PrefixProjectionConfig {
    /// Which projection sites get the prefix (the reference decoders have one, `prefix_projection`).
    pub targets: Targeting,
    /// Number of virtual tokens.
    #[config(default = 10)]
    pub num_virtual_tokens: usize,
    /// The MLP's hidden width `h`; `None`: `token_dim` (peft's default).
    #[config(default = "None")]
    pub encoder_hidden_size: Option<usize>,
    /// Standard deviation of the embeddings' normal init (peft's embedding default is 1).
    #[config(default = 1.0)]
    pub init_std: f64,
}

impl MethodConfig for PrefixProjectionConfig {
    fn peft_type(&self) -> &'static str {
        "PREFIX_TUNING"
    }
    fn site(&self) -> Site {
        Site::PrefixProjection
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> peft_core::Result<()> {
        if self.num_virtual_tokens == 0 || self.encoder_hidden_size == Some(0) {
            return Err(PeftError::InvalidConfig(format!("num_virtual_tokens {} and encoder_hidden_size {:?} must be at least 1", self.num_virtual_tokens, self.encoder_hidden_size)));
        }
        if !(self.init_std >= 0.0 && self.init_std.is_finite()) {
            return Err(PeftError::InvalidConfig(format!("init_std must be finite and at least 0, got {}", self.init_std)));
        }
        Ok(())
    }
}
