//! `peft inspect` and `peft merge`: HF peft adapters on checkpoints alone.

use std::collections::BTreeSet;
use std::path::Path;

use peft_core::checkpoint::{metadata, parse, read_bytes, write_atomic};
use peft_hf::adapterhub::is_adapterhub_folder;
use peft_hf::{AdapterFolder, AdapterHubFolder};

use crate::quantize::CliError;

/// A folder's tensors as `peft inspect` shows them: name, dtype, shape.
type Listing<'a> = Vec<(&'a String, String, &'a Vec<usize>)>;

fn parameter_count(tensors: &Listing<'_>) -> usize {
    tensors.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum()
}

fn tensors_json(tensors: &Listing<'_>) -> Vec<serde_json::Value> {
    tensors.iter().map(|(n, d, s)| serde_json::json!({"name": n, "dtype": d, "shape": s})).collect()
}

/// The modules under `heading`, the parameter count and the tensors, one per line.
fn modules_and_tensors(heading: &str, modules: &BTreeSet<String>, tensors: &Listing<'_>) -> String {
    let mut out = format!("{heading} ({}):\n", modules.len());
    for m in modules {
        out += &format!("  {m}\n");
    }
    out += &format!("parameters: {}\ntensors ({}):\n", parameter_count(tensors), tensors.len());
    for (n, d, s) in tensors {
        out += &format!("  {n} {d} {s:?}\n");
    }
    out
}

pub fn inspect(dir: &Path, json: bool) -> Result<String, CliError> {
    if is_adapterhub_folder(dir) {
        return inspect_adapterhub(dir, json);
    }
    let folder = AdapterFolder::read(dir)?;
    let config = &folder.config;
    let mut tensors: Listing<'_> = folder.tensors().map(|t| (&t.key, format!("{:?}", t.dtype), &t.shape)).collect();
    tensors.sort();
    let mut modules: BTreeSet<String> = folder.modules.keys().cloned().collect();
    if folder.prompt.is_some() {
        modules.insert(if matches!(config.peft_type.as_str(), "PROMPT_TUNING" | "P_TUNING") { "(the input embeddings)" } else { "(keys and values of every attention layer)" }.into());
    }
    let ranks: BTreeSet<usize> = tensors.iter().filter(|(n, _, _)| n.contains("lora_A")).filter_map(|(_, _, s)| s.first().copied()).collect();
    if json {
        let value = serde_json::json!({
            "peft_type": config.peft_type,
            "ranks": ranks,
            "lora_alpha": config.lora_alpha,
            "use_rslora": config.use_rslora,
            "use_dora": config.use_dora,
            "target_modules": config.target_modules,
            "modules": modules,
            "num_virtual_tokens": config.num_virtual_tokens,
            "parameters": parameter_count(&tensors),
            "tensors": tensors_json(&tensors),
        });
        return Ok(serde_json::to_string_pretty(&value).expect("json"));
    }
    let mut out = format!("method: {}\n", config.peft_type);
    match config.peft_type.as_str() {
        "LORA" => out += &format!("ranks: {ranks:?}\nalpha: {} (rslora {}, dora {})\n", config.lora_alpha, config.use_rslora, config.use_dora),
        "IA3" => {
            let ff: Vec<&String> = modules.iter().filter(|m| config.is_feedforward(m).unwrap_or(false)).collect();
            out += &format!("feed-forward modules (input scaled): {ff:?}\n");
        }
        "PREFIX_TUNING" => {
            let get = |k: &str| config.extra.get(k).map(|v| v.to_string()).unwrap_or_else(|| "?".into());
            out += &format!(
                "virtual tokens: {}, layers: {}, key/value width: {} ({} heads)\n",
                config.num_virtual_tokens.map_or("?".into(), |n| n.to_string()),
                get("num_layers"),
                get("token_dim"),
                get("num_attention_heads")
            );
        }
        "PROMPT_TUNING" | "P_TUNING" => {
            let get = |k: &str| config.extra.get(k).map(|v| v.to_string()).unwrap_or_else(|| "?".into());
            out += &format!("virtual tokens: {}, embedding width: {}\n", config.num_virtual_tokens.map_or("?".into(), |n| n.to_string()), get("token_dim"));
        }
        _ => {}
    }
    out += &modules_and_tensors("targeted modules", &modules, &tensors);
    Ok(out.trim_end().to_string())
}

/// `peft inspect` of an AdapterHub bottleneck folder.
fn inspect_adapterhub(dir: &Path, json: bool) -> Result<String, CliError> {
    let folder = AdapterHubFolder::read(dir)?;
    let c = &folder.config;
    let mut modules = BTreeSet::new();
    for t in &folder.tensors {
        modules.insert(folder.split(&t.key)?.0.to_string());
    }
    let tensors: Listing<'_> = folder.tensors.iter().map(|t| (&t.key, format!("{:?}", t.dtype), &t.shape)).collect();
    let placement = format!("{:?}", c.placement);
    let activation = format!("{:?}", c.activation);
    if json {
        let value = serde_json::json!({
            "peft_type": "BOTTLENECK",
            "format": "AdapterHub",
            "name": folder.name,
            "placement": placement,
            "reduction_factor": c.reduction_factor,
            "activation": activation,
            "scaling": c.scaling,
            "modules": modules,
            "parameters": parameter_count(&tensors),
            "tensors": tensors_json(&tensors),
        });
        return Ok(serde_json::to_string_pretty(&value).expect("json"));
    }
    let mut out = format!("method: BOTTLENECK (AdapterHub folder, adapter `{}`)\nplacement: {placement}, reduction factor {}, activation {activation}, scaling {}\n", folder.name, c.reduction_factor, c.scaling);
    out += &modules_and_tensors("sub-layers", &modules, &tensors);
    Ok(out.trim_end().to_string())
}

pub fn merge(base_dir: &Path, adapter_dir: &Path, out: &Path) -> Result<String, CliError> {
    if is_adapterhub_folder(adapter_dir) {
        return Err(CliError::Nothing(format!(
            "`{}` holds bottleneck adapters (AdapterHub), which cannot be merged into the weights: their non-linearity has no weight form; load them with `peft logits --adapter` instead",
            adapter_dir.display()
        )));
    }
    let folder = AdapterFolder::read(adapter_dir)?;
    let base_path = base_dir.join("model.safetensors");
    let base_bytes = read_bytes(&base_path)?;
    let base = parse(&base_bytes, &base_path.display().to_string())?;
    let (entries, summary) = peft_hf::merge_checkpoint::<burn::backend::NdArray>(&base, &folder, &Default::default())?;
    write_atomic(out, &entries, Some(metadata(&base_bytes, &base_path.display().to_string())?))?;
    Ok(format!("merged {} adapter into {} modules; wrote {} tensors to {}", summary.method, summary.modules.len(), entries.len(), out.display()))
}
