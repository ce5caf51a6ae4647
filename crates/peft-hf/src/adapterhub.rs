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

/// What follows `<module>.adapters.<name>.` in AdapterHub's keys, with our parameter for each
/// (the last two only with `use_gating`).
const PARAMS: [(&str, &str); 6] = [
    ("adapter_down.0.weight", "down.weight"),
    ("adapter_down.0.bias", "down.bias"),
    ("adapter_up.weight", "up.weight"),
    ("adapter_up.bias", "up.bias"),
    ("gate.weight", "gate.weight"),
    ("gate.bias", "gate.bias"),
];

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
        let flags = [("ln_before", self.ln_before), ("ln_after", self.ln_after), ("phm_layer", self.phm_layer)];
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
        Ok(BottleneckConfig::new(Targeting::names::<&str>(&[])).with_reduction_factor(rf).with_activation(activation).with_placement(placement).with_scaling(scaling).with_gating(self.use_gating))
    }
}

/// Our module path for AdapterHub's bottleneck layer `module` (HF path) when the model has a
/// bottleneck site there: the norm closing a post-norm sub-layer (`<module>.LayerNorm`, BERT),
/// or the residual add itself (`<module>` = `...attention_adapters`, Llama and GPT-2).
fn site_of(module: &str, map: &WeightMap, sites: &BTreeSet<&str>) -> Option<String> {
    [format!("{module}.{NORM}"), module.to_string()].iter().flat_map(|hf| map.to_ours_candidates(hf)).find(|ours| sites.contains(ours.as_str()))
}

/// An AdapterHub bottleneck folder as read: its options as our config (no targets yet) and its
/// tensors.
#[derive(Clone, Debug)]
pub struct AdapterHubFolder {
    /// The adapter's name in its keys (`<module>.adapters.<name>.<param>`).
    pub name: String,
    /// The model width the file states.
    pub hidden_size: Option<usize>,
    /// AdapterHub's options as our config; `targets` is empty.
    pub config: BottleneckConfig,
    /// Whether adapters follow the attention block (`mh_adapter`).
    pub after_attention: bool,
    /// Whether adapters follow the feed-forward block (`output_adapter`).
    pub after_feed_forward: bool,
    /// Its tensors, as named in the file.
    pub tensors: Vec<HfTensor>,
}

impl AdapterHubFolder {
    /// Reads `dir`; an option this library does not build is a typed error naming it.
    pub fn read(dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE);
        let label = config_path.display().to_string();
        let file: HubFile = serde_json::from_slice(&read_bytes(&config_path)?).map_err(|source| PeftError::Json { path: label, source })?;
        let config = file.config.to_config()?;
        let tensors = read_weights(dir)?;
        Ok(Self { name: file.name, hidden_size: file.hidden_size, config, after_attention: file.config.mh_adapter, after_feed_forward: file.config.output_adapter, tensors })
    }

    /// The sub-layer (HF path) and AdapterHub parameter name of tensor `key`.
    pub fn split<'a>(&self, key: &'a str) -> Result<(&'a str, &'a str)> {
        let infix = format!(".adapters.{}.", self.name);
        let (module, suffix) = key.split_once(&infix).ok_or_else(|| PeftError::UnexpectedTensor { name: key.into(), reason: format!("not a tensor of adapter `{}` (`<module>{infix}<param>`)", self.name) })?;
        if !PARAMS.iter().any(|(theirs, _)| *theirs == suffix) {
            return Err(PeftError::UnexpectedTensor { name: key.into(), reason: "not part of a bottleneck adapter".into() });
        }
        if suffix.starts_with("gate.") && !self.config.gating {
            return Err(PeftError::UnexpectedTensor { name: key.into(), reason: "a gate, but the config has use_gating = false".into() });
        }
        if let Some((_, after_attention)) = layer_of(module)
            && !(if after_attention { self.after_attention } else { self.after_feed_forward })
        {
            let option = if after_attention { "mh_adapter" } else { "output_adapter" };
            return Err(PeftError::UnexpectedTensor { name: key.into(), reason: format!("the config has {option} = false") });
        }
        Ok((module, suffix))
    }
}

/// The AdapterHub folder in `dir` as our config (targets: our module paths) and values, on a
/// model whose wrapped layers are `layers`.
pub(crate) fn load(dir: &Path, map: &WeightMap, layers: &[TunedLayerInfo]) -> Result<(BottleneckConfig, AdapterTensors)> {
    let folder = AdapterHubFolder::read(dir)?;
    let sites: BTreeSet<&str> = layers.iter().filter(|l| l.kind == LayerKind::Residual).map(|l| l.path.as_str()).collect();
    let mut out = AdapterTensors::new();
    for t in &folder.tensors {
        let (module, suffix) = folder.split(&t.key)?;
        let ours_param = PARAMS.iter().find(|(theirs, _)| *theirs == suffix).map(|(_, ours)| *ours).expect("split checks the name");
        let site = site_of(module, map, &sites).ok_or_else(|| PeftError::UnexpectedTensor { name: t.key.clone(), reason: format!("the model has no bottleneck site after `{module}` (a post-norm sub-layer's `{NORM}`)") })?;
        let value = match t.shape.len() {
            1 => t.to_vector(),
            2 => t.to_burn_matrix()?,
            _ => return Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: vec![0, 0], actual: t.shape.clone() }),
        };
        out.entry(site).or_default().insert(ours_param.to_string(), value);
    }
    if out.is_empty() {
        return Err(PeftError::MissingTensor(format!("<module>.adapters.{}.adapter_down.0.weight (the folder has no adapter tensors)", folder.name)));
    }
    let rf = folder.config.reduction_factor;
    for (site, params) in &out {
        let [d, width] = params.get("down.weight").map(|w| [w.shape[0], w.shape[1]]).ok_or_else(|| PeftError::MissingTensor(format!("{site}: adapter_down.0.weight")))?;
        if folder.hidden_size.is_some_and(|h| h != d) || d / rf != width {
            let want = folder.hidden_size.unwrap_or(d);
            return Err(PeftError::ShapeMismatch { name: format!("{site}: adapter_down.0.weight"), expected: vec![want / rf, want], actual: vec![width, d] });
        }
    }
    let modules: Vec<&String> = out.keys().collect();
    let config = BottleneckConfig { targets: Targeting::names(&modules), ..folder.config };
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
        let module = hf.strip_suffix(&format!(".{NORM}")).unwrap_or(&hf);
        let (layer, after_attention) = layer_of(module).ok_or_else(|| cannot(format!("`{module}` is not one of AdapterHub's places (`<layers>.N.output`, `<layers>.N.attention.output`, `<layers>.N.attention_adapters`, `<layers>.N.output_adapters`)")))?;
        if after_attention { &mut attention } else { &mut output }.insert(layer);
        for (theirs, ours) in PARAMS.iter().take(if config.gating { 6 } else { 4 }) {
            let value = params.get(*ours).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{ours}")))?;
            let key = format!("{module}.adapters.{name}.{theirs}");
            entries.push(if value.shape.len() == 2 { hf_matrix(key, value) } else { TensorEntry::f32(key, value.shape.to_vec(), &values_f32(value)) });
        }
        hidden = params.get("up.bias").map(|b| b.shape[0]);
    }
    let all: BTreeSet<usize> = layers
        .iter()
        .filter(|l| l.kind == LayerKind::Residual)
        .filter_map(|l| {
            let hf = map.to_hf(&l.path);
            layer_of(hf.strip_suffix(&format!(".{NORM}")).unwrap_or(&hf))
        })
        .map(|(i, _)| i)
        .collect();
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
            "shared_W_phm": false, "shared_phm_rule": true, "stochastic_depth": 0.0, "use_gating": config.gating
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

/// The layer index of one of AdapterHub's places, and whether it follows the attention:
/// `<...>.N.output` / `<...>.N.attention.output` (BERT), `<...>.N.output_adapters` /
/// `<...>.N.attention_adapters` (Llama, GPT-2).
fn layer_of(module: &str) -> Option<(usize, bool)> {
    let (before, after_attention) = if let Some(b) = module.strip_suffix(".attention.output").or_else(|| module.strip_suffix(".attention_adapters")) {
        (b, true)
    } else {
        (module.strip_suffix(".output").or_else(|| module.strip_suffix(".output_adapters"))?, false)
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
        assert_eq!(layer_of("model.layers.2.attention_adapters"), Some((2, true)));
        assert_eq!(layer_of("transformer.h.0.output_adapters"), Some((0, false)));
    }
}
