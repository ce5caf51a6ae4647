//! The settings of a training run, one config for the command's flags and `train.toml`.

use peft_core::{PeftError, Result, TargetModules};
use serde::{Deserialize, Serialize};

/// What trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// LoRA (`r`, `alpha`, `dropout`) on the targeted linear layers.
    Lora,
    /// LoRA on a 4-bit NF4 base.
    Qlora,
    /// IA3 on the targeted linear layers.
    Ia3,
    /// Bottleneck adapters at the residual adds (AdapterHub's places; preset `adapter_config`).
    Adapter,
    /// Prefix tuning at every attention layer.
    Prefix,
    /// Prompt tuning: virtual tokens before the input.
    Prompt,
    /// P-Tuning: prompt tuning through an MLP while training.
    Ptuning,
    /// Every parameter.
    Full,
}

impl Method {
    /// The method's name, as [`parse`](Self::parse) takes it.
    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    }

    /// Parses `lora`, `qlora`, `ia3`, `adapter`, `prefix`, `prompt`, `ptuning` or `full`.
    pub fn parse(text: &str) -> Result<Self> {
        parse_name(text, "method", "lora, qlora, ia3, adapter, prefix, prompt, ptuning, full")
    }
}

/// One of the lower-case names of a settings enum (any case), or the error naming `key` and
/// what is `supported`.
fn parse_name<T: serde::de::DeserializeOwned>(text: &str, key: &str, supported: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(text.to_lowercase())).map_err(|_| PeftError::UnsupportedValue { key: key.into(), value: text.into(), supported: supported.into() })
}

/// AdapterHub's bottleneck adapter presets (`seq_bn`, `double_seq_bn`, `par_bn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterPreset {
    /// `seq_bn`: after each MLP, relu, reduction 16.
    Pfeiffer,
    /// `double_seq_bn`: after attention and after each MLP, swish, reduction 16.
    Houlsby,
    /// `par_bn`: after each MLP from its input, relu, reduction 2, scaling 4.
    Parallel,
}

impl AdapterPreset {
    /// Parses `pfeiffer`, `houlsby` or `parallel`.
    pub fn parse(text: &str) -> Result<Self> {
        parse_name(text, "adapter_config", "pfeiffer, houlsby, parallel")
    }

    /// The residual adds the preset adapts, as `target` names (the reference decoders' sites).
    pub fn places(self) -> &'static str {
        match self {
            Self::Houlsby => "attention_adapters,output_adapters",
            Self::Pfeiffer | Self::Parallel => "output_adapters",
        }
    }
}

/// What the model learns to predict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// The next token (chat, instruction, prompt/completion and plain-text data).
    #[default]
    CausalLm,
    /// One class per text (`text` + `label` data), through a classification head on the model:
    /// peft's `SEQ_CLS`.
    SeqCls,
}

impl Task {
    /// Parses `causal-lm` or `seq-cls`.
    pub fn parse(text: &str) -> Result<Self> {
        parse_name(text, "task", "causal-lm, seq-cls")
    }

    /// peft's `task_type` for it.
    pub fn peft_task_type(self) -> &'static str {
        match self {
            Self::CausalLm => "CAUSAL_LM",
            Self::SeqCls => "SEQ_CLS",
        }
    }
}

/// P-Tuning's encoder (peft's `encoder_reparameterization_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderType {
    /// Three linear layers with ReLU between.
    #[default]
    Mlp,
    /// A bidirectional LSTM, then two linear layers.
    Lstm,
}

impl EncoderType {
    /// Parses `mlp` or `lstm` (any case, as peft's `MLP`, `LSTM`).
    pub fn parse(text: &str) -> Result<Self> {
        parse_name(text, "encoder_reparameterization_type", "mlp, lstm")
    }
}

/// How the learning rate moves after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Stays at `lr`.
    Constant,
    /// Falls linearly to 0 at the last step.
    Linear,
    /// Falls along half a cosine to 0 at the last step.
    Cosine,
}

impl Schedule {
    /// Parses `constant`, `linear` or `cosine`.
    pub fn parse(text: &str) -> Result<Self> {
        parse_name(text, "schedule", "constant, linear, cosine")
    }
}

/// Settings of a run. Defaults follow TRL's `SFTConfig` and HF peft where they have one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// What the model learns: the next token, or a class per text.
    pub task: Task,
    /// Classes of the classification head (task `seq-cls`; none: one more than the largest
    /// label in the training data).
    pub num_labels: Option<usize>,
    /// The method.
    pub method: Method,
    /// Targeted modules: names (`q_proj,v_proj`), a regular expression, or `all-linear`.
    pub target: String,
    /// LoRA rank.
    pub r: usize,
    /// LoRA alpha.
    pub alpha: f64,
    /// LoRA dropout.
    pub dropout: f64,
    /// IA3's feed-forward modules (their input is scaled).
    pub feedforward: String,
    /// Virtual tokens of prefix and prompt tuning.
    pub num_virtual_tokens: usize,
    /// Prompt tuning: start the virtual tokens from the embeddings of this text (peft's
    /// `prompt_tuning_init_text`, tokenized as transformers does, special tokens included),
    /// instead of random ones.
    pub prompt_init_text: Option<String>,
    /// P-Tuning, and prefix tuning with `prefix_projection`: the hidden width of the MLP (none:
    /// the width of the tokens it makes, as peft).
    pub encoder_hidden_size: Option<usize>,
    /// P-Tuning's encoder: `mlp` or `lstm` (peft's `encoder_reparameterization_type`).
    pub encoder_reparameterization_type: EncoderType,
    /// P-Tuning's LSTM layers (peft's `encoder_num_layers`).
    pub encoder_num_layers: usize,
    /// Prefix tuning through peft's `prefix_projection` MLP (P-Tuning v2's reparameterization);
    /// the adapter is saved as the MLP's output.
    pub prefix_projection: bool,
    /// Bottleneck adapters: AdapterHub's preset, `pfeiffer` (after each MLP, reading its output
    /// plus the residual), `houlsby` (after attention and after each MLP) or `parallel` (after
    /// each MLP, reading its input).
    pub adapter_config: AdapterPreset,
    /// Bottleneck adapters: width = hidden size / this (none: the preset's, 16 or 2).
    pub reduction_factor: Option<usize>,
    /// Passes over the data (when `max_steps` is not set).
    pub epochs: usize,
    /// Optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Examples (rows, with packing) per forward pass.
    pub batch_size: usize,
    /// Forward passes per optimizer step.
    pub grad_accum: usize,
    /// Longest example in tokens.
    pub max_len: usize,
    /// Drop longer examples instead of truncating them.
    pub drop_long: bool,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// The schedule after the warm-up.
    pub schedule: Schedule,
    /// Clip the global gradient norm to this (0: off).
    pub max_grad_norm: f64,
    /// Seed of the adapter's initialization, the data order and dropout.
    pub seed: u64,
    /// Save a checkpoint every this many optimizer steps (0: only at the end).
    pub save_every: usize,
    /// Evaluate every this many optimizer steps (0: only at the end).
    pub eval_every: usize,
    /// Share of the training data held out for evaluation when no eval file is given.
    pub eval_split: f64,
    /// Pack short examples into rows of `max_len` tokens (attention stays inside each example).
    pub packing: bool,
    /// Batch examples of similar length together (less padding).
    pub group_by_length: bool,
    /// Let the loss cover prompts too.
    pub train_on_prompt: bool,
    /// Skip malformed data lines (counted) instead of refusing the file.
    pub skip_bad_lines: bool,
    /// Use ChatML for chat data when the model has no chat template.
    pub chatml_fallback: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: Task::CausalLm,
            num_labels: None,
            method: Method::Lora,
            target: "all-linear".into(),
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            feedforward: "down_proj,mlp.c_proj".into(),
            num_virtual_tokens: 10,
            prompt_init_text: None,
            encoder_hidden_size: None,
            encoder_reparameterization_type: EncoderType::Mlp,
            encoder_num_layers: 2,
            prefix_projection: false,
            adapter_config: AdapterPreset::Pfeiffer,
            reduction_factor: None,
            epochs: 1,
            max_steps: None,
            lr: 2e-4,
            weight_decay: 0.0,
            batch_size: 4,
            grad_accum: 1,
            max_len: 1024,
            drop_long: false,
            warmup: 0,
            schedule: Schedule::Linear,
            max_grad_norm: 1.0,
            seed: 42,
            save_every: 0,
            eval_every: 0,
            eval_split: 0.0,
            packing: false,
            group_by_length: false,
            train_on_prompt: false,
            skip_bad_lines: false,
            chatml_fallback: true,
        }
    }
}

/// Most batches accumulated into one optimizer step (they are held in memory together).
pub const MAX_GRAD_ACCUM: usize = 1 << 16;
/// Most passes over the data (the plan of every epoch is drawn up front).
pub const MAX_EPOCHS: usize = 100_000;
/// Most virtual tokens of a prefix.
pub const MAX_VIRTUAL_TOKENS: usize = 4096;

impl TrainConfig {
    /// Reads a `train.toml` whose keys are this struct's fields (unknown keys are errors).
    pub fn from_toml(text: &str, name: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| PeftError::InvalidConfig(format!("{name}: {}", e.to_string().replace('\n', " "))))
    }

    /// Checks every value once, before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(PeftError::InvalidConfig(what));
        if self.prompt_init_text.is_some() && self.method != Method::Prompt {
            return bad(format!("prompt_init_text is for method prompt, not {}", self.method.name()));
        }
        if self.prefix_projection && self.method != Method::Prefix {
            return bad(format!("prefix_projection is for method prefix, not {}", self.method.name()));
        }
        if self.reduction_factor.is_some() && self.method != Method::Adapter {
            return bad(format!("reduction_factor is for method adapter, not {}", self.method.name()));
        }
        if self.task == Task::SeqCls {
            // Prompt tokens would shift what a classifier pools (peft pools them for BERT);
            // AdapterHub's folder keeps no head.
            if matches!(self.method, Method::Prompt | Method::Ptuning | Method::Adapter) {
                return Err(PeftError::UnsupportedValue { key: "method for task seq-cls".into(), value: self.method.name(), supported: "lora, qlora, ia3, prefix, full".into() });
            }
            if self.packing || self.train_on_prompt {
                return bad("packing and train_on_prompt are for task causal-lm; a classified text is one row".into());
            }
        } else if self.num_labels.is_some() {
            return bad("num_labels is for task seq-cls".into());
        }
        if self.num_labels == Some(0) {
            return bad("num_labels must be at least 1".into());
        }
        if self.reduction_factor == Some(0) {
            return bad("reduction_factor must be at least 1".into());
        }
        if self.encoder_hidden_size.is_some() && !(self.method == Method::Ptuning || self.prefix_projection) {
            return bad(format!("encoder_hidden_size is for method ptuning or prefix with prefix_projection, not {}", self.method.name()));
        }
        let lstm = self.encoder_reparameterization_type == EncoderType::Lstm;
        if (lstm || self.encoder_num_layers != 2) && self.method != Method::Ptuning {
            return bad(format!("encoder_reparameterization_type and encoder_num_layers are for method ptuning, not {}", self.method.name()));
        }
        if !(1..=peft_ptuning::MAX_LSTM_LAYERS).contains(&self.encoder_num_layers) {
            return bad(format!("encoder_num_layers must be 1 to {}", peft_ptuning::MAX_LSTM_LAYERS));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("lr must be a positive number, got {}", self.lr));
        }
        if self.batch_size == 0 || self.grad_accum == 0 || self.max_len < 2 {
            return bad(format!("batch_size and grad_accum must be at least 1 and max_len at least 2, got {}, {}, {}", self.batch_size, self.grad_accum, self.max_len));
        }
        if self.max_steps == Some(0) || (self.max_steps.is_none() && self.epochs == 0) {
            return bad("nothing to train: max_steps or epochs is 0".into());
        }
        let sane = |v: f64| v >= 0.0 && v.is_finite();
        if !((0.0..1.0).contains(&self.eval_split) && sane(self.max_grad_norm) && sane(self.weight_decay)) {
            return bad("eval_split must be in [0, 1); max_grad_norm and weight_decay at least 0".into());
        }
        if self.grad_accum > MAX_GRAD_ACCUM || self.epochs > MAX_EPOCHS || self.num_virtual_tokens > MAX_VIRTUAL_TOKENS {
            return bad(format!(
                "grad_accum {}, epochs {} or num_virtual_tokens {} is beyond the limits ({MAX_GRAD_ACCUM}, {MAX_EPOCHS}, {MAX_VIRTUAL_TOKENS}; docs/reliability.md)",
                self.grad_accum, self.epochs, self.num_virtual_tokens
            ));
        }
        if self.batch_size.saturating_mul(self.max_len) > 1 << 24 {
            return bad(format!("a batch of {} rows of {} tokens is too large for one forward pass; lower batch_size or max_len (grad_accum keeps the effective batch)", self.batch_size, self.max_len));
        }
        Ok(())
    }

    /// `target` as peft's `target_modules`: `all-linear`, a comma-separated list of names, or a
    /// regular expression (any other character). For bottleneck adapters `all-linear` (the
    /// default) stands for the preset's places.
    pub fn targets(&self) -> TargetModules {
        if self.method == Method::Adapter && self.target == "all-linear" {
            return modules(self.adapter_config.places());
        }
        modules(&self.target)
    }

    /// The settings that decide what training computes (not how often it reports or saves):
    /// a resumed run must match them.
    pub fn fingerprint(&self) -> String {
        let same = Self { save_every: 0, eval_every: 0, ..self.clone() };
        serde_json::to_string(&same).unwrap_or_default()
    }
}

/// `all-linear`, names separated by commas, or a regular expression.
pub fn modules(text: &str) -> TargetModules {
    if text == "all-linear" {
        TargetModules::AllLinear
    } else if text.chars().all(|c| c.is_ascii_alphanumeric() || "_.,- ".contains(c)) {
        TargetModules::Names(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
    } else {
        TargetModules::Regex(text.into())
    }
}

/// The learning rate of optimizer step `step` (from 0) of `total`: HF's schedules with a linear
/// warm-up from 0.
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    if step < config.warmup {
        return config.lr * step as f64 / config.warmup as f64;
    }
    let progress = (step - config.warmup) as f64 / (total.saturating_sub(config.warmup)).max(1) as f64;
    match config.schedule {
        Schedule::Constant => config.lr,
        Schedule::Linear => config.lr * (1.0 - progress).max(0.0),
        Schedule::Cosine => config.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_warm_up_then_fall_as_hf_does() {
        let c = TrainConfig { lr: 1.0, warmup: 2, ..Default::default() };
        let lrs: Vec<f64> = (0..6).map(|s| learning_rate(&c, s, 6)).collect();
        assert_eq!(lrs, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]);
        let cos = TrainConfig { schedule: Schedule::Cosine, ..c.clone() };
        assert!((learning_rate(&cos, 4, 6) - 0.5).abs() < 1e-12);
        assert_eq!(learning_rate(&TrainConfig { schedule: Schedule::Constant, ..c }, 5, 6), 1.0);
    }

    #[test]
    fn targets_toml_and_validation() {
        assert_eq!(modules("all-linear"), TargetModules::AllLinear);
        assert_eq!(modules("q_proj, v_proj"), TargetModules::names(&["q_proj", "v_proj"]));
        assert_eq!(modules(r".*\.(q|v)_proj"), TargetModules::Regex(r".*\.(q|v)_proj".into()));
        let c = TrainConfig::from_toml("method = \"ia3\"\nlr = 0.001\nmax_steps = 5\n", "t").unwrap();
        assert_eq!((c.method, c.lr, c.max_steps, c.r), (Method::Ia3, 0.001, Some(5), 8));
        assert!(TrainConfig::from_toml("lr = 0.1\nlearning_rate = 3\n", "t").unwrap_err().to_string().contains("learning_rate"));
        assert!(TrainConfig { lr: -1.0, ..Default::default() }.validate().is_err());
        assert!(TrainConfig { batch_size: 1 << 20, ..Default::default() }.validate().is_err());
        assert!(Method::parse("loha").is_err());
        assert_eq!(TrainConfig { save_every: 5, ..Default::default() }.fingerprint(), TrainConfig::default().fingerprint());
    }
}
