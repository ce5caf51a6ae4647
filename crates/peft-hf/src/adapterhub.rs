//! AdapterHub's (`adapters` 1.x) bottleneck adapter folders, both ways: `adapter_config.json`
//! (`{"config": {...}, "name": ..., "hidden_size": ...}`) and the weights, read from
//! `adapter.safetensors` or `pytorch_adapter.bin` (through the restricted [`crate::torch_file`]
//! reader), written as `adapter.safetensors` (load it with `load_adapter(dir,
//! use_safetensors=True)`).
//!
//! A tensor `<module>.adapters.<name>.adapter_down.0.weight` belongs to the bottleneck layer of
//! the post-norm sub-layer `<module>` (BERT's `encoder.layer.N.output` and
//! `encoder.layer.N.attention.output`), which in our models is the norm closing it
//! (`<module>.LayerNorm`, an [`AdaptedNorm`](peft_adapter::AdaptedNorm) site). AdapterHub's
//! options map to [`BottleneckConfig`]: `is_parallel` → parallel, `original_ln_before` →
//! after the norm, otherwise sequential; options that change the computation in ways this
//! library does not build (`ln_before`, `ln_after`, gating, PHM layers, learned scaling,
//! invertible adapters, per-layer reduction factors) are typed errors naming the option.

use std::collections::BTreeSet;
use std::path::Path;

use peft_adapter::{AdapterActivation, AdapterPlacement, BottleneckConfig};
use peft_core::checkpoint::{TensorEntry, parse, read_bytes};
use peft_core::{AdapterTensors, LayerKind, PeftError, Result, Targeting, TunedLayerInfo};
use serde::Deserialize;

use crate::WeightMap;
use crate::folder::{CONFIG_FILE, HfTensor, hf_matrix, values_f32, write_files};

/// AdapterHub's weights file when saved with `use_safetensors=True` (what we write).
pub const SAFE_WEIGHTS_FILE: &str = "adapter.safetensors";
/// AdapterHub's default weights file, a `torch.save` archive.
pub const TORCH_WEIGHTS_FILE: &str = "pytorch_adapter.bin";
/// The name AdapterHub gives the norm after a sub-layer (BERT family).
const NORM: &str = "LayerNorm";

/// What follows `<module>.adapters.<name>.` in AdapterHub's keys, with our parameter for each.
const PARAMS: [(&str, &str); 4] = [("adapter_down.0.weight", "down.weight"), ("adapter_down.0.bias", "down.bias"), ("adapter_up.weight", "up.weight"), ("adapter_up.bias", "up.bias")];

/// Whether `dir` holds an AdapterHub folder: its `adapter_config.json` has AdapterHub's
/// `config` object and no peft `peft_type`.
pub fn is_adapterhub_folder(dir: &Path) -> bool {
    let Ok(bytes) = read_bytes(&dir.join(CONFIG_FILE)) else { return false };
    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v.get("config").is_some_and(serde_json::Value::is_object) && v.get("peft_type").is_none())
}

/// `adapter_config.json` of an AdapterHub folder.
#[derive(Clone, Debug, Deserialize)]
struct HubFile {
    config: BnSettings,
    name: String,
    #[serde(default)]
    hidden_size: Option<usize>,
}

/// The options of AdapterHub's `BnConfig`, with its defaults.
#[derive(Clone, Debug, Deserialize)]
struct BnSettings {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    mh_adapter: bool,
    #[serde(default)]
    output_adapter: bool,
    reduction_factor: serde_json::Value,
    non_linearity: String,
    #[serde(default)]
    original_ln_before: bool,
    #[serde(default = "yes")]
    original_ln_after: bool,
    #[serde(default)]
    ln_before: bool,
    #[serde(default)]
    ln_after: bool,
    #[serde(default)]
    is_parallel: bool,
    #[serde(default = "one")]
    scaling: serde_json::Value,
    #[serde(default)]
    use_gating: bool,
    #[serde(default = "yes_value")]
    residual_before_ln: serde_json::Value,
    #[serde(default)]
    phm_layer: bool,
    #[serde(default)]
    inv_adapter: Option<String>,
}

fn yes() -> bool {
    true
}
fn one() -> serde_json::Value {
    serde_json::json!(1.0)
}
fn yes_value() -> serde_json::Value {
    serde_json::json!(true)
}

fn unsupported(key: &str, value: impl ToString, supported: &str) -> PeftError {
    PeftError::UnsupportedValue { key: format!("{key} (AdapterHub)"), value: value.to_string(), supported: supported.into() }
}

impl BnSettings {
    /// Our config (without targets), or a typed error for an option we do not build.
    fn to_config(&self) -> Result<BottleneckConfig> {
        if let Some(a) = self.architecture.as_deref().filter(|a| *a != "bottleneck") {
            return Err(unsupported("architecture", a, "bottleneck (LoRA, prefix and prompt adapters load from peft folders)"));
        }
        let flags = [("ln_before", self.ln_before), ("ln_after", self.ln_after), ("use_gating", self.use_gating), ("phm_layer", self.phm_layer)];
        if let Some((key, _)) = flags.iter().find(|(_, on)| *on) {
            return Err(unsupported(key, true, "false"));
        }
        if !self.original_ln_after {
            return Err(unsupported("original_ln_after", false, "true"));
        }
        if let Some(inv) = &self.inv_adapter {
            return Err(unsupported("inv_adapter", inv, "null"));
        }
        if self.original_ln_before && !self.is_parallel && self.residual_before_ln != serde_json::json!(true) {
            return Err(unsupported("residual_before_ln", &self.residual_before_ln, "true"));
        }
        let scaling = self.scaling.as_f64().filter(|s| s.is_finite()).ok_or_else(|| unsupported("scaling", &self.scaling, "a number"))?;
        let rf = self.reduction_factor.as_f64().filter(|r| *r >= 1.0 && r.fract() == 0.0 && *r <= usize::MAX as f64);
        let rf = rf.ok_or_else(|| unsupported("reduction_factor", &self.reduction_factor, "a whole number of at least 1"))? as usize;
        let activation = match self.non_linearity.to_lowercase().as_str() {
            "relu" => AdapterActivation::Relu,
            "swish" | "silu" => AdapterActivation::Swish,
            "gelu" => AdapterActivation::Gelu,
            other => return Err(unsupported("non_linearity", other, "relu, swish, silu, gelu")),
        };
        let placement = if self.is_parallel {
            AdapterPlacement::Parallel
        } else if self.original_ln_before {
            AdapterPlacement::AfterNorm
        } else {
            AdapterPlacement::Sequential
        };
        Ok(BottleneckConfig::new(Targeting::names::<&str>(&[])).with_reduction_factor(rf).with_activation(activation).with_placement(placement).with_scaling(scaling))
    }
}

/// Our module path for the sub-layer `module` (HF path, without the norm) when the model has a
/// bottleneck site there.
fn site_of(module: &str, map: &WeightMap, sites: &BTreeSet<&str>) -> Option<String> {
    let hf = format!("{module}.{NORM}");
    let ours = map.to_ours(&hf);
    if sites.contains(ours.as_str()) {
        return Some(ours);
    }
    // `BertFor*` files name the encoder `bert.*`.
    let (_, rest) = hf.split_once('.')?;
    let ours = map.to_ours(rest);
    sites.contains(ours.as_str()).then_some(ours)
}

/// The AdapterHub folder in `dir` as our config (targets: our module paths) and values, on a
/// model whose wrapped layers are `layers`.
pub(crate) fn load(dir: &Path, map: &WeightMap, layers: &[TunedLayerInfo]) -> Result<(BottleneckConfig, AdapterTensors)> {
    let config_path = dir.join(CONFIG_FILE);
    let label = config_path.display().to_string();
    let file: HubFile = serde_json::from_slice(&read_bytes(&config_path)?).map_err(|source| PeftError::Json { path: label, source })?;
    let config = file.config.to_config()?;
    let tensors = read_weights(dir)?;
    let sites: BTreeSet<&str> = layers.iter().filter(|l| l.kind == LayerKind::Norm).map(|l| l.path.as_str()).collect();
    let infix = format!(".adapters.{}.", file.name);
    let mut out = AdapterTensors::new();
    for t in tensors {
        let (module, suffix) = t.key.split_once(&infix).ok_or_else(|| PeftError::UnexpectedTensor { name: t.key.clone(), reason: format!("not a tensor of adapter `{}` (`<module>{infix}<param>`)", file.name) })?;
        let (_, ours_param) = PARAMS.iter().find(|(theirs, _)| *theirs == suffix).ok_or_else(|| PeftError::UnexpectedTensor { name: t.key.clone(), reason: "not part of a bottleneck adapter".into() })?;
        if let Some((_, after_attention)) = layer_of(module)
            && !(if after_attention { file.config.mh_adapter } else { file.config.output_adapter })
        {
            let option = if after_attention { "mh_adapter" } else { "output_adapter" };
            return Err(PeftError::UnexpectedTensor { name: t.key.clone(), reason: format!("the config has {option} = false") });
        }
        let site = site_of(module, map, &sites).ok_or_else(|| PeftError::UnexpectedTensor { name: t.key.clone(), reason: format!("the model has no bottleneck site after `{module}` (a post-norm sub-layer's `{NORM}`)") })?;
        let value = if t.shape.len() == 2 { t.to_burn_matrix()? } else { t.to_vector() };
        if t.shape.len() > 2 {
            return Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: vec![0, 0], actual: t.shape.clone() });
        }
        out.entry(site).or_default().insert((*ours_param).to_string(), value);
    }
    if out.is_empty() {
        return Err(PeftError::MissingTensor(format!("<module>{infix}adapter_down.0.weight (the folder has no adapter tensors)")));
    }
    for (site, params) in &out {
        let [d, width] = params.get("down.weight").map(|w| [w.shape[0], w.shape[1]]).ok_or_else(|| PeftError::MissingTensor(format!("{site}: adapter_down.0.weight")))?;
        if file.hidden_size.is_some_and(|h| h != d) || d / config.reduction_factor != width {
            let want = file.hidden_size.unwrap_or(d);
            return Err(PeftError::ShapeMismatch { name: format!("{site}: adapter_down.0.weight"), expected: vec![want / config.reduction_factor, want], actual: vec![width, d] });
        }
    }
    let modules: Vec<&String> = out.keys().collect();
    let config = BottleneckConfig { targets: Targeting::names(&modules), ..config };
    Ok((config, out))
}

/// The adapter's tensors from `adapter.safetensors`, or else `pytorch_adapter.bin`.
fn read_weights(dir: &Path) -> Result<Vec<HfTensor>> {
    let safe = dir.join(SAFE_WEIGHTS_FILE);
    if safe.exists() {
        let bytes = read_bytes(&safe)?;
        let file = parse(&bytes, &safe.display().to_string())?;
        let mut names = file.names();
        names.sort();
        return names.into_iter().map(|key| HfTensor::read(&file, key)).collect();
    }
    let torch = dir.join(TORCH_WEIGHTS_FILE);
    let bytes = read_bytes(&torch)?;
    crate::torch_file::read_state_dict(&bytes, &torch.display().to_string())
}

/// Writes adapter `name`'s `tensors` (our module paths: the norms closing sub-layers) as an
/// AdapterHub folder in `dir`: `adapter_config.json` and `adapter.safetensors`. `layers` are the
/// model's wrapped layers (to find the layers left out).
pub(crate) fn save(config: &BottleneckConfig, name: &str, tensors: &AdapterTensors, map: &WeightMap, layers: &[TunedLayerInfo], dir: &Path) -> Result<()> {
    let cannot = |why: String| PeftError::InvalidConfig(format!("AdapterHub's format cannot hold this adapter: {why}"));
    let mut entries = Vec::new();
    let (mut attention, mut output) = (BTreeSet::new(), BTreeSet::new());
    let mut hidden = None;
    for (site, params) in tensors {
        let hf = map.to_hf(site);
        let module = hf.strip_suffix(&format!(".{NORM}")).ok_or_else(|| cannot(format!("`{site}` is not the norm after a sub-layer")))?;
        let (layer, after_attention) = layer_of(module).ok_or_else(|| cannot(format!("`{module}` is not `<layers>.N.output` or `<layers>.N.attention.output`")))?;
        if after_attention { &mut attention } else { &mut output }.insert(layer);
        for (theirs, ours) in PARAMS {
            let value = params.get(ours).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{ours}")))?;
            let key = format!("{module}.adapters.{name}.{theirs}");
            entries.push(if value.shape.len() == 2 { hf_matrix(key, value) } else { TensorEntry::f32(key, value.shape.to_vec(), &values_f32(value)) });
        }
        hidden = params.get("up.bias").map(|b| b.shape[0]);
    }
    let all: BTreeSet<usize> = layers.iter().filter(|l| l.kind == LayerKind::Norm).filter_map(|l| layer_of(map.to_hf(&l.path).strip_suffix(&format!(".{NORM}"))?)).map(|(i, _)| i).collect();
    let used: BTreeSet<usize> = attention.union(&output).copied().collect();
    if (!attention.is_empty() && attention != used) || (!output.is_empty() && output != used) {
        return Err(cannot("its layers carry adapters after attention and after the feed-forward block unevenly; AdapterHub places both on the same layers".into()));
    }
    let leave_out: Vec<usize> = all.difference(&used).copied().collect();
    let activation = match config.activation {
        AdapterActivation::Relu => "relu",
        AdapterActivation::Swish => "swish",
        AdapterActivation::Gelu => "gelu",
    };
    let (parallel, ln_before) = match config.placement {
        AdapterPlacement::Parallel => (true, false),
        AdapterPlacement::AfterNorm => (false, true),
        AdapterPlacement::Sequential => (false, false),
    };
    let json = serde_json::json!({
        "config": {
            "adapter_residual_before_ln": false, "cross_adapter": false, "dropout": 0.0,
            "factorized_phm_W": true, "factorized_phm_rule": false, "hypercomplex_nonlinearity": "glorot-uniform",
            "init_weights": if parallel { "mam_adapter" } else { "bert" }, "init_weights_seed": null,
            "inv_adapter": null, "inv_adapter_reduction_factor": null, "is_parallel": parallel, "learn_phm": true,
            "leave_out": leave_out, "ln_after": false, "ln_before": false,
            "mh_adapter": !attention.is_empty(), "non_linearity": activation,
            "original_ln_after": true, "original_ln_before": ln_before, "output_adapter": !output.is_empty(),
            "phm_bias": true, "phm_c_init": "normal", "phm_dim": 4, "phm_init_range": 0.0001, "phm_layer": false, "phm_rank": 1,
            "reduction_factor": config.reduction_factor, "residual_before_ln": true, "scaling": config.scaling,
            "shared_W_phm": false, "shared_phm_rule": true, "stochastic_depth": 0.0, "use_gating": false
        },
        "hidden_size": hidden,
        "model_class": null,
        "model_name": null,
        "model_type": null,
        "name": name,
        "version": concat!("burn-peft.", env!("CARGO_PKG_VERSION")),
    });
    write_files(dir, SAFE_WEIGHTS_FILE, None, &json, &entries)
}

/// The layer index of `<...>.N.output` / `<...>.N.attention.output`, and whether it follows the
/// attention.
fn layer_of(module: &str) -> Option<(usize, bool)> {
    let before = module.strip_suffix(".output")?;
    let (before, after_attention) = match before.strip_suffix(".attention") {
        Some(b) => (b, true),
        None => (before, false),
    };
    let index = before.rsplit('.').next()?.parse().ok()?;
    Some((index, after_attention))
}

#[cfg(test)]
mod tests {
    use super::layer_of;

    #[test]
    fn layers_are_read_from_sub_layer_paths() {
        assert_eq!(layer_of("encoder.layer.3.output"), Some((3, false)));
        assert_eq!(layer_of("bert.encoder.layer.11.attention.output"), Some((11, true)));
        assert_eq!(layer_of("encoder.layer.x.output"), None);
        assert_eq!(layer_of("encoder.layer.0.intermediate"), None);
    }
}
