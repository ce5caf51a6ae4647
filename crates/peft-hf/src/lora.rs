//! LoRA in HF peft's folder, both ways: rsLoRA, DoRA (`lora_magnitude_vector`), rank and alpha
//! patterns, embeddings (`lora_embedding_A/B`) and the LoRA bias (`lora_B.bias`).

use std::collections::{BTreeMap, BTreeSet};

use peft_core::checkpoint::TensorEntry;
use peft_core::{AdapterTensors, LayerKind, PeftError, Result, Targeting, TunedLayerInfo};
use peft_lora::LoraConfig;

use crate::WeightMap;
use crate::folder::{AdapterFolder, hf_matrix, values_f32};
use crate::keys::key;

const EMBEDDING: (&str, &str) = ("lora_embedding_A", "lora_embedding_B");
const LINEAR: (&str, &str) = ("lora_A.weight", "lora_B.weight");

/// Our config and values for the LoRA adapter in `folder`. Each module's rank and alpha come from
/// the file's config on HF's path and must agree with the tensors; they travel as a per-module
/// table.
pub(crate) fn to_ours(folder: &AdapterFolder, map: &WeightMap) -> Result<(LoraConfig, AdapterTensors)> {
    let hf = &folder.config;
    let rule = hf.lora_rule();
    let mut tensors = AdapterTensors::new();
    let mut module_ranks = BTreeMap::new();
    let mut bias = false;
    for (module, parts) in &folder.modules {
        let embedding = parts.contains_key(EMBEDDING.0) || parts.contains_key(EMBEDDING.1);
        let (sa, sb) = if embedding { EMBEDDING } else { LINEAR };
        let (a, b) = (folder.tensor(module, sa)?, folder.tensor(module, sb)?);
        let (r, alpha) = rule.rank_and_alpha(module)?;
        if a.shape.len() != 2 || a.shape[0] != r {
            return Err(PeftError::ShapeMismatch { name: a.key.clone(), expected: vec![r, a.shape.get(1).copied().unwrap_or(0)], actual: a.shape.clone() });
        }
        if b.shape.len() != 2 || b.shape[1] != r {
            return Err(PeftError::ShapeMismatch { name: b.key.clone(), expected: vec![b.shape.first().copied().unwrap_or(0), r], actual: b.shape.clone() });
        }
        let mut values = BTreeMap::from([("a".to_string(), a.to_burn_matrix()?), ("b".to_string(), b.to_burn_matrix()?)]);
        if let Some(t) = parts.get("lora_B.bias") {
            values.insert("bias".into(), t.to_vector());
            bias = true;
        }
        if let Some(t) = parts.get("lora_magnitude_vector") {
            values.insert("magnitude".into(), t.to_vector());
        } else if hf.use_dora && !embedding {
            folder.tensor(module, "lora_magnitude_vector")?;
        }
        let ours = map.to_ours(module);
        module_ranks.insert(ours.clone(), (r, alpha));
        tensors.insert(ours, values);
    }
    if tensors.is_empty() {
        return Err(PeftError::MissingTensor(key("<module>", "lora_A.weight (the adapter has no LoRA tensors)")));
    }
    let modules: Vec<&String> = tensors.keys().collect();
    let config = LoraConfig::new(Targeting::names(&modules))
        .with_r(hf.r.max(1))
        .with_alpha(hf.lora_alpha)
        .with_use_rslora(hf.use_rslora)
        .with_use_dora(hf.use_dora)
        .with_bias(bias)
        .with_module_ranks(module_ranks);
    Ok((config, tensors))
}

/// The LoRA adapter `tensors`, built with `config`, in peft's names and layout, and its config
/// fields (every module's rank and alpha, so that peft reads exactly what we have).
pub(crate) fn from_ours(config: &LoraConfig, tensors: &AdapterTensors, map: &WeightMap, layers: &[TunedLayerInfo]) -> Result<(Vec<TensorEntry>, serde_json::Value)> {
    if config.gating {
        return Err(PeftError::UnsupportedValue { key: "gating (LoRA)".into(), value: "true".into(), supported: "false: peft's LoRA has no gate; save a gated LoRA with peft_core::adapter_file".into() });
    }
    let (mut entries, mut ranks, mut alphas, mut targets) = (Vec::new(), BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
    for (module, values) in tensors {
        let hf_module = map.to_hf(module);
        let embedding = layers.iter().any(|l| &l.path == module && l.kind == LayerKind::Embedding);
        let get = |p: &str| values.get(p).ok_or_else(|| PeftError::MissingTensor(format!("{module}.{p}")));
        let (sa, sb) = if embedding { EMBEDDING } else { LINEAR };
        entries.push(hf_matrix(key(&hf_module, sa), get("a")?));
        entries.push(hf_matrix(key(&hf_module, sb), get("b")?));
        for (ours, suffix) in [("bias", "lora_B.bias"), ("magnitude", "lora_magnitude_vector")] {
            if let Some(v) = values.get(ours) {
                entries.push(TensorEntry::f32(key(&hf_module, suffix), v.shape.to_vec(), &values_f32(v)));
            }
        }
        let (r, alpha) = config.rank_and_alpha(module)?;
        if r != config.r {
            ranks.insert(hf_module.clone(), r);
        }
        if (alpha - config.alpha).abs() > 1e-12 * config.alpha.abs().max(1.0) {
            alphas.insert(hf_module.clone(), alpha);
        }
        targets.insert(hf_module);
    }
    let json = serde_json::json!({
        "peft_type": "LORA",
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "use_rslora": config.use_rslora,
        "use_dora": config.use_dora,
        "lora_bias": config.bias,
        "bias": "none",
        "fan_in_fan_out": map.linear_in_out(),
        "target_modules": targets,
        "rank_pattern": ranks,
        "alpha_pattern": alphas,
        "init_lora_weights": true,
        "modules_to_save": null,
    });
    Ok((entries, json))
}
