//! HF peft's adapter files: `adapter_config.json` (read tolerantly) and the tensor names of
//! `adapter_model.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::targeting::pattern_value;
use crate::{PeftError, Result, TargetModules};

/// The prefix peft puts before a module's path in saved adapters.
pub const KEY_PREFIX: &str = "base_model.model.";

/// What follows a module's path in a saved LoRA adapter (DoRA, embeddings and LoRA bias included).
pub const LORA_SUFFIXES: [&str; 6] = ["lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_magnitude_vector", "lora_embedding_A", "lora_embedding_B"];

/// What follows a module's path in a saved IA3 adapter.
pub const IA3_SUFFIXES: [&str; 1] = ["ia3_l"];

/// Prefix tuning's single tensor (no module path, no prefix).
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

/// The base-model name of a base tensor saved in an adapter file: peft's `modules_to_save`
/// copies (`<m>.modules_to_save.<adapter>.<p>`, or `<m>.<p>` when `<m>` is listed in
/// `modules_to_save`) and embedding layers saved with the adapter (`<m>.base_layer.<p>`).
pub fn saved_base_tensor(key: &str, modules_to_save: &[String]) -> Option<String> {
    let inner = key.strip_prefix(KEY_PREFIX)?;
    if let Some((module, rest)) = inner.split_once(".modules_to_save.") {
        return rest.split_once('.').map(|(_, param)| format!("{module}.{param}"));
    }
    if let Some((module, param)) = inner.split_once(".base_layer.") {
        return Some(format!("{module}.{param}"));
    }
    let (module, _) = inner.rsplit_once('.')?;
    modules_to_save.iter().any(|m| crate::targeting::name_matches(m, module)).then(|| inner.to_string())
}

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

    /// Rank and scaling of the LoRA module at `path` (a module path inside the base model).
    pub fn lora_scaling(&self, path: &str) -> Result<(usize, f64)> {
        lora_rank_and_scaling(path, self.r, self.lora_alpha, &self.rank_pattern, &self.alpha_pattern, self.use_rslora)
    }

    /// Whether IA3's module at `path` is feed-forward.
    pub fn is_feedforward(&self, path: &str) -> Result<bool> {
        self.feedforward_modules.as_ref().map_or(Ok(false), |m| m.matches(path, crate::LayerKind::Linear))
    }
}

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PeftError::Io { path: name.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| PeftError::Json { path: name, source })
}

/// HF peft's LoRA rank and scaling at `path`: the rank and alpha after `rank_pattern` and
/// `alpha_pattern`, then `alpha/r`, or `alpha/sqrt(r)` with rsLoRA.
pub fn lora_rank_and_scaling(
    path: &str,
    r: usize,
    alpha: f64,
    rank_pattern: &BTreeMap<String, usize>,
    alpha_pattern: &BTreeMap<String, f64>,
    use_rslora: bool,
) -> Result<(usize, f64)> {
    let r = pattern_value(rank_pattern, path)?.unwrap_or(r);
    let alpha = pattern_value(alpha_pattern, path)?.unwrap_or(alpha);
    if r == 0 {
        return Err(PeftError::ZeroRank { path: path.into() });
    }
    Ok((r, if use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 }))
}

/// Splits a saved adapter key into the module path and the rest:
/// `base_model.model.model.layers.0.q_proj.lora_A.weight` → (`model.layers.0.q_proj`, `lora_A.weight`).
pub fn split_key<'a>(key: &'a str, suffixes: &[&'a str]) -> Option<(&'a str, &'a str)> {
    let inner = key.strip_prefix(KEY_PREFIX)?;
    suffixes.iter().find_map(|s| inner.strip_suffix(s).and_then(|p| p.strip_suffix('.')).map(|p| (p, *s)))
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

    #[test]
    fn splits_saved_keys() {
        assert_eq!(
            split_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", &["lora_A.weight", "lora_B.weight"]),
            Some(("model.layers.0.self_attn.q_proj", "lora_A.weight"))
        );
        assert_eq!(split_key("model.q.lora_A.weight", &["lora_A.weight"]), None);
        let save = vec!["lm_head".to_string()];
        assert_eq!(saved_base_tensor("base_model.model.lm_head.weight", &save).as_deref(), Some("lm_head.weight"));
        assert_eq!(saved_base_tensor("base_model.model.score.modules_to_save.default.bias", &[]).as_deref(), Some("score.bias"));
        assert_eq!(saved_base_tensor("base_model.model.model.embed_tokens.base_layer.weight", &[]).as_deref(), Some("model.embed_tokens.weight"));
        assert_eq!(saved_base_tensor("base_model.model.model.norm.weight", &save), None);
    }
}
