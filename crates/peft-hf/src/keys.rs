//! The tensor names of HF peft's `adapter_model.safetensors`: one vocabulary for every reader
//! and writer of adapter files.

use peft_core::targeting::name_matches;

/// The prefix peft puts before a module's path in saved adapters.
pub const KEY_PREFIX: &str = "base_model.model.";

/// What follows a module's path in a saved LoRA adapter (DoRA, embeddings and LoRA bias included).
pub const LORA_SUFFIXES: [&str; 6] = ["lora_A.weight", "lora_B.weight", "lora_B.bias", "lora_magnitude_vector", "lora_embedding_A", "lora_embedding_B"];

/// What follows a module's path in a saved IA3 adapter.
pub const IA3_SUFFIXES: [&str; 1] = ["ia3_l"];

/// Prefix tuning's single tensor (no module path, no prefix).
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

/// The per-module suffixes of the method `peft_type`; `None` for a method this library does
/// not read.
pub fn suffixes(peft_type: &str) -> Option<&'static [&'static str]> {
    match peft_type {
        "LORA" => Some(&LORA_SUFFIXES),
        "IA3" => Some(&IA3_SUFFIXES),
        "PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING" => Some(&[]),
        _ => None,
    }
}

/// The methods whose folders this library reads, for messages.
pub const SUPPORTED_PEFT_TYPES: &str = "LORA, IA3, PREFIX_TUNING, PROMPT_TUNING, P_TUNING";

/// The saved name of parameter `suffix` of the module at HF path `module`.
pub fn key(module: &str, suffix: &str) -> String {
    format!("{KEY_PREFIX}{module}.{suffix}")
}

/// Splits a saved adapter key into the module path and the suffix:
/// `base_model.model.model.layers.0.q_proj.lora_A.weight` → (`model.layers.0.q_proj`, `lora_A.weight`).
pub fn split_key<'a>(key: &'a str, suffixes: &[&'static str]) -> Option<(&'a str, &'static str)> {
    let inner = key.strip_prefix(KEY_PREFIX)?;
    suffixes.iter().find_map(|s| inner.strip_suffix(s).and_then(|p| p.strip_suffix('.')).map(|p| (p, *s)))
}

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
    modules_to_save.iter().any(|m| name_matches(m, module)).then(|| inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
