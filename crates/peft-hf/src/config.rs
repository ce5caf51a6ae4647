//! `adapter_config.json`, read tolerantly as peft writes it (nulls, fields of newer versions).

use std::collections::BTreeMap;
use std::path::Path;

use peft_core::checkpoint::read_json;
use peft_core::{LayerKind, PeftError, Result, TargetModules, Targeting};
use peft_lora::LoraConfig;
use serde::{Deserialize, Deserializer, Serialize};

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An integer or a list of integers (peft's `layers_to_transform`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One value.
    One(T),
    /// Several.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<T> {
        match self {
            Self::One(v) => vec![v.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `adapter_config.json`. Unknown fields are kept in `extra`; nulls read as defaults.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HfAdapterConfig {
    /// `LORA`, `IA3`, `PREFIX_TUNING`, ...
    pub peft_type: String,
    /// LoRA rank.
    #[serde(default, deserialize_with = "null_as_default")]
    pub r: usize,
    /// LoRA alpha.
    #[serde(default, deserialize_with = "null_as_default")]
    pub lora_alpha: f64,
    /// Targets.
    #[serde(default)]
    pub target_modules: Option<TargetModules>,
    /// Exclusions.
    #[serde(default)]
    pub exclude_modules: Option<TargetModules>,
    /// rsLoRA scaling.
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_rslora: bool,
    /// DoRA.
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_dora: bool,
    /// Base weights stored `[in, out]` (GPT-2's Conv1D).
    #[serde(default, deserialize_with = "null_as_default")]
    pub fan_in_fan_out: bool,
    /// Per-module ranks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alphas.
    #[serde(default, deserialize_with = "null_as_default")]
    pub alpha_pattern: BTreeMap<String, f64>,
    /// Layer indices to adapt.
    #[serde(default)]
    pub layers_to_transform: Option<OneOrMany<usize>>,
    /// Names before the layer index.
    #[serde(default)]
    pub layers_pattern: Option<OneOrMany<String>>,
    /// Modules trained and saved in full.
    #[serde(default, deserialize_with = "null_as_default")]
    pub modules_to_save: Vec<String>,
    /// IA3's feed-forward modules.
    #[serde(default)]
    pub feedforward_modules: Option<TargetModules>,
    /// Prefix tuning's virtual tokens.
    #[serde(default)]
    pub num_virtual_tokens: Option<usize>,
    /// Everything else, kept as written.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl HfAdapterConfig {
    /// Reads `dir/adapter_config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        read_json(&dir.join("adapter_config.json"))
    }

    /// Parses the JSON text of an adapter config.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|source| PeftError::Json { path: name.into(), source })
    }

    /// LoRA's rank and scaling rule as this file states it (`r`, `lora_alpha`, the patterns,
    /// rsLoRA), for [`LoraConfig::rank_and_scaling`] on HF's module paths.
    pub fn lora_rule(&self) -> LoraConfig {
        let targets = Targeting::new(self.target_modules.clone().unwrap_or(TargetModules::Names(Vec::new())));
        LoraConfig::new(targets)
            .with_r(self.r)
            .with_alpha(self.lora_alpha)
            .with_use_rslora(self.use_rslora)
            .with_rank_pattern(self.rank_pattern.clone())
            .with_alpha_pattern(self.alpha_pattern.clone())
    }

    /// Rank and scaling of the LoRA module at `path` (a module path inside the base model).
    pub fn lora_scaling(&self, path: &str) -> Result<(usize, f64)> {
        self.lora_rule().rank_and_scaling(path)
    }

    /// Whether IA3's module at `path` is feed-forward.
    pub fn is_feedforward(&self, path: &str) -> Result<bool> {
        self.feedforward_modules.as_ref().map_or(Ok(false), |m| m.matches(path, LayerKind::Linear))
    }

    /// An integer field of the config that only some methods have (prefix tuning's `num_layers`).
    pub fn extra_usize(&self, key: &str) -> Result<usize> {
        self.extra
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| PeftError::InvalidConfig(format!("{} config needs `{key}`", self.peft_type)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_peft_configs_with_nulls_unknown_fields_and_patterns() {
        let text = r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
            "use_rslora": false, "use_dora": null, "rank_pattern": {"q_proj": 4}, "alpha_pattern": {},
            "layers_to_transform": 1, "layers_pattern": "layers", "modules_to_save": null,
            "megatron_config": null, "a_field_from_the_future": {"x": 1}, "task_type": "CAUSAL_LM"}"#;
        let c = HfAdapterConfig::parse(text, "t").unwrap();
        assert_eq!(c.r, 8);
        assert!(!c.use_dora);
        assert_eq!(c.layers_to_transform.as_ref().unwrap().to_vec(), vec![1]);
        assert_eq!(c.lora_scaling("model.layers.0.self_attn.q_proj").unwrap(), (4, 4.0));
        assert_eq!(c.lora_scaling("model.layers.0.self_attn.v_proj").unwrap(), (8, 2.0));
        assert!(c.extra.contains_key("a_field_from_the_future"));
        let all: HfAdapterConfig = serde_json::from_str(r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": "all-linear"}"#).unwrap();
        assert_eq!(all.target_modules, Some(TargetModules::AllLinear));
        assert!(matches!(HfAdapterConfig::parse("{\"r\": 2", "bad"), Err(PeftError::Json { .. })));
        assert!(matches!(HfAdapterConfig::parse("{\"r\": 2}", "no type"), Err(PeftError::Json { .. })));
    }
}
