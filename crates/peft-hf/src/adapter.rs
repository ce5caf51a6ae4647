//! HF peft adapters on any model that reads HF checkpoints ([`HfCheckpoint`]), in both
//! directions: LoRA (rsLoRA, DoRA, rank and alpha patterns, embeddings, LoRA bias), IA3, prefix
//! tuning, prompt tuning and P-Tuning; and AdapterHub's bottleneck adapters, which peft has no
//! format for ([`crate::adapterhub`]).
//!
//! Which modules carry the adapter is read from the tensors themselves (every tensor must find
//! its layer); ranks and scalings come from the config evaluated on HF's module paths, exactly as
//! peft does, and must agree with the tensors' shapes. HF module paths become ours through the
//! model's [`WeightMap`](crate::WeightMap).

use std::path::Path;

use burn::tensor::backend::Backend;
use peft_core::checkpoint::{TensorEntry, parse, serialize};
use peft_adapter::BottleneckConfig;
use peft_core::{MethodConfig, PeftError, PeftModel, Result};
use peft_lora::{Ia3Config, LoraConfig};
use peft_ptuning::{PrefixConfig, PrefixProjectionConfig, PromptTuningConfig};

use crate::folder::{AdapterFolder, write_folder};
use crate::keys::KEY_PREFIX;
use crate::{HfAdapterConfig, HfCheckpoint, adapterhub, ia3, lora, prefix, prompt};

/// The method of an adapter, with our config for it: the one table of the methods whose peft
/// folders this library reads and writes.
#[derive(Clone, Debug)]
pub enum HfMethod {
    /// LoRA, rsLoRA, DoRA.
    Lora(LoraConfig),
    /// IA3.
    Ia3(Ia3Config),
    /// Prefix tuning.
    Prefix(PrefixConfig),
    /// Prefix tuning through peft's `prefix_projection` MLP (saved as its output).
    PrefixProjection(PrefixProjectionConfig),
    /// Prompt tuning and P-Tuning.
    Prompt(PromptTuningConfig),
    /// Bottleneck adapters at the steps closing residual sub-layers, in AdapterHub's format.
    Bottleneck(BottleneckConfig),
}

impl HfMethod {
    /// The config, for [`PeftModel::add_adapter`].
    pub fn config(&self) -> &dyn MethodConfig {
        match self {
            Self::Lora(c) => c,
            Self::Ia3(c) => c,
            Self::Prefix(c) => c,
            Self::PrefixProjection(c) => c,
            Self::Prompt(c) => c,
            Self::Bottleneck(c) => c,
        }
    }
}

/// What [`load_adapter`] attached.
#[derive(Debug)]
pub struct LoadedAdapter {
    /// The file's config (`None` for an AdapterHub folder).
    pub hf: Option<HfAdapterConfig>,
    /// Our config for the same adapter (targets are our module paths), usable with
    /// [`save_adapter`].
    pub method: HfMethod,
    /// Our module paths that carry it.
    pub modules: Vec<String>,
    /// Base tensors the folder also held (peft's `modules_to_save`, saved embedding layers),
    /// loaded into the base model.
    pub base_tensors: Vec<String>,
}

/// Loads the adapter in `dir` into `model` under `name`: an HF peft folder, or an AdapterHub
/// bottleneck folder (read by the layout of its `adapter_config.json`). On error the model is
/// unchanged.
///
/// Any model takes part by implementing [`HfCheckpoint`] (its [`WeightMap`](crate::WeightMap)
/// from Burn's paths to HF's names); see [`save_adapter`] for a whole round trip.
pub fn load_adapter<B: Backend, M: HfCheckpoint<B>>(model: &mut M, dir: &Path, name: &str) -> Result<LoadedAdapter> {
    let map = model.weight_map();
    let (folder, method, tensors) = if adapterhub::is_adapterhub_folder(dir) {
        let (config, tensors) = adapterhub::load(dir, &map, &model.tuned_layers())?;
        (None, HfMethod::Bottleneck(config), tensors)
    } else {
        let folder = AdapterFolder::read(dir)?;
        let (method, tensors) = match folder.config.peft_type.as_str() {
            "LORA" => lora::to_ours(&folder, &map).map(|(c, t)| (HfMethod::Lora(c), t))?,
            "IA3" => ia3::to_ours(&folder, &map).map(|(c, t)| (HfMethod::Ia3(c), t))?,
            "PROMPT_TUNING" | "P_TUNING" => prompt::to_ours(&folder, &model.tuned_layers()).map(|(c, t)| (HfMethod::Prompt(c), t))?,
            _ => prefix::to_ours(&folder, &model.tuned_layers()).map(|(c, t)| (HfMethod::Prefix(c), t))?,
        };
        (Some(folder), method, tensors)
    };
    let modules = tensors.keys().cloned().collect();
    let mut work = model.clone();
    work.add_adapter(name, method.config())?;
    work.set_adapter_tensors(name, tensors)?;
    let Some(folder) = folder else {
        *model = work;
        return Ok(LoadedAdapter { hf: None, method, modules, base_tensors: Vec::new() });
    };
    if !folder.base.is_empty() {
        let entries: Vec<TensorEntry> = folder.base.iter().map(|(name, t)| TensorEntry::f32(name.clone(), t.shape.clone(), &t.values)).collect();
        let label = dir.display().to_string();
        let bytes = serialize(&entries, None, &label)?;
        let (loaded, report) = work.assign_hf_weights(&parse(&bytes, &label)?, true)?;
        if let Some(unused) = report.unused.first() {
            return Err(PeftError::UnexpectedTensor { name: unused.clone(), reason: "a base tensor of the adapter that the model does not have".into() });
        }
        work = loaded;
    }
    *model = work;
    let base_tensors = folder.base.values().map(|t| t.key.clone()).collect();
    Ok(LoadedAdapter { hf: Some(folder.config), method, modules, base_tensors })
}

/// Options of [`save_adapter`].
#[derive(Clone, Debug, Default)]
pub struct SaveOptions<'a> {
    /// peft's `task_type` (`CAUSAL_LM`, `FEATURE_EXTRACTION`, ...).
    pub task_type: Option<&'a str>,
    /// Modules (our paths) trained in full, saved whole as peft's `modules_to_save`.
    pub modules_to_save: &'a [&'a str],
}

/// Saves adapter `name` of `model` as an HF peft folder (`adapter_config.json`,
/// `adapter_model.safetensors`) in `dir`, which peft's `PeftModel.from_pretrained` loads;
/// bottleneck adapters as an AdapterHub folder (`adapter_config.json`, `adapter.safetensors`;
/// `options` do not apply). `method` is the config the adapter was built with. Files appear
/// whole or not at all.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::{Linear, LinearConfig};
/// use peft_core::{PeftModel, Targeting, Tuned};
/// use peft_hf::{HfCheckpoint, HfMethod, SaveOptions, WeightMap, load_adapter, save_adapter};
/// use peft_lora::{LoraConfig, LoraLinear};
///
/// #[derive(burn::module::Module, Debug)]
/// struct Mlp<B: burn::tensor::backend::Backend> {
///     up_proj: LoraLinear<B>,
///     down_proj: LoraLinear<B>,
/// }
/// peft_core::adaptable!(Mlp { up_proj, down_proj });
/// impl<B: burn::tensor::backend::Backend> HfCheckpoint<B> for Mlp<B> {
///     fn weight_map(&self) -> WeightMap {
///         WeightMap::new() // our field names are HF's module names
///     }
/// }
///
/// let device = Default::default();
/// let mlp = || Mlp::<NdArray> {
///     up_proj: Tuned::new(LinearConfig::new(8, 16).init(&device)),
///     down_proj: Tuned::new(LinearConfig::new(16, 8).init(&device)),
/// };
/// let mut model = mlp();
/// let config = LoraConfig::new(Targeting::names(&["up_proj", "down_proj"])).with_r(4);
/// model.add_adapter("task", &config)?;
/// let dir = std::env::temp_dir().join(format!("peft-doc-{}", std::process::id()));
/// save_adapter(&mut model, "task", &HfMethod::Lora(config), &dir, &SaveOptions::default())?;
///
/// let mut fresh = mlp();
/// let loaded = load_adapter(&mut fresh, &dir, "task")?;
/// assert_eq!(loaded.modules, ["down_proj", "up_proj"]);
/// assert_eq!(fresh.adapter_tensors("task")?, model.adapter_tensors("task")?);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), peft_core::PeftError>(())
/// ```
pub fn save_adapter<B: Backend, M: HfCheckpoint<B>>(model: &mut M, name: &str, method: &HfMethod, dir: &Path, options: &SaveOptions<'_>) -> Result<()> {
    let map = model.weight_map();
    let tensors = model.adapter_tensors(name)?;
    if tensors.is_empty() {
        return Err(PeftError::UnknownAdapter { name: name.into(), known: model.adapter_names() });
    }
    let layers = model.tuned_layers();
    let (mut entries, fields) = match method {
        // AdapterHub's folder, not peft's: written whole by its own piece.
        HfMethod::Bottleneck(config) => return adapterhub::save(config, name, &tensors, &map, &layers, dir),
        HfMethod::Lora(c) => lora::from_ours(c, &tensors, &map, &layers)?,
        HfMethod::Ia3(c) => ia3::from_ours(c, &tensors, &map)?,
        HfMethod::Prefix(c) => prefix::from_ours(c, &tensors, &layers)?,
        HfMethod::PrefixProjection(_) => prefix::from_projected(&tensors, &layers)?,
        HfMethod::Prompt(_) => prompt::from_ours(&tensors, &layers)?,
    };
    let mut config = serde_json::json!({
        "task_type": options.task_type,
        "inference_mode": true,
        "base_model_name_or_path": null,
        "revision": null,
        "auto_mapping": null,
    });
    let object = config.as_object_mut().expect("a JSON object");
    object.extend(fields.as_object().expect("a JSON object").clone());
    if !options.modules_to_save.is_empty() {
        let mut saved = Vec::new();
        for module in options.modules_to_save {
            let hf = map.to_hf(module);
            let prefix = format!("{hf}.");
            let tensors = model.hf_tensors(&|name| name.starts_with(&prefix));
            if tensors.is_empty() {
                return Err(PeftError::MissingTensor(format!("{hf}.* (modules_to_save `{module}` has no parameters)")));
            }
            entries.extend(tensors.into_iter().map(|e| TensorEntry { name: format!("{KEY_PREFIX}{}", e.name), ..e }));
            saved.push(hf);
        }
        object.insert("modules_to_save".into(), serde_json::json!(saved));
    }
    write_folder(dir, &config, &entries)
}
