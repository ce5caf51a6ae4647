//! HF peft's adapter folder (`adapter_config.json` + `adapter_model.safetensors`): the one reader
//! every use of a folder goes through (loading into a model, merging into a checkpoint,
//! inspecting), and the one writer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::TensorData;
use peft_core::checkpoint::{TensorEntry, parse, read_bytes, read_finite_f32, serialize, transpose, write_bytes_atomic};
use peft_core::{PeftError, Result};
use safetensors::Dtype;

use crate::HfAdapterConfig;
use crate::keys::{PROMPT_EMBEDDINGS, SUPPORTED_PEFT_TYPES, saved_base_tensor, split_key, suffixes};

/// The weights file of an adapter folder.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// The config file of an adapter folder.
pub const CONFIG_FILE: &str = "adapter_config.json";

/// One tensor of an adapter file, in `f32` (finite, checked on reading).
#[derive(Clone, Debug, PartialEq)]
pub struct HfTensor {
    /// Its name in the file.
    pub key: String,
    /// Its type in the file.
    pub dtype: Dtype,
    /// Its shape in the file.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Vec<f32>,
}

/// An adapter folder as read: its config and its tensors, sorted by role.
#[derive(Clone, Debug)]
pub struct AdapterFolder {
    /// The folder.
    pub dir: PathBuf,
    /// `adapter_config.json`.
    pub config: HfAdapterConfig,
    /// Per HF module path, the method's tensors by suffix (`lora_A.weight`, `ia3_l`, ...).
    pub modules: BTreeMap<String, BTreeMap<&'static str, HfTensor>>,
    /// Prefix or prompt tuning's `prompt_embeddings`.
    pub prompt: Option<HfTensor>,
    /// Base-model tensors saved with the adapter (peft's `modules_to_save`, saved embedding
    /// layers), by their name in the base model.
    pub base: BTreeMap<String, HfTensor>,
}

impl AdapterFolder {
    /// Reads `dir`. A method this library does not read, a tensor that is not part of the
    /// method's layout, a malformed or truncated file, or a NaN are typed errors.
    pub fn read(dir: &Path) -> Result<Self> {
        let config = HfAdapterConfig::read(dir)?;
        let path = dir.join(WEIGHTS_FILE);
        let bytes = read_bytes(&path)?;
        let file = parse(&bytes, &path.display().to_string())?;
        let Some(suffixes) = suffixes(&config.peft_type) else {
            return Err(PeftError::UnsupportedValue { key: "peft_type".into(), value: config.peft_type.clone(), supported: SUPPORTED_PEFT_TYPES.into() });
        };
        let read = |key: &str| HfTensor::read(&file, key);
        let mut folder = Self { dir: dir.to_path_buf(), config: config.clone(), modules: BTreeMap::new(), prompt: None, base: BTreeMap::new() };
        let mut names: Vec<&str> = file.names();
        names.sort();
        for key in names {
            if key == PROMPT_EMBEDDINGS && matches!(config.peft_type.as_str(), "PREFIX_TUNING" | "PROMPT_TUNING" | "P_TUNING") {
                folder.prompt = Some(read(key)?);
            } else if let Some((module, suffix)) = split_key(key, suffixes) {
                folder.modules.entry(module.to_string()).or_default().insert(suffix, read(key)?);
            } else if let Some(name) = saved_base_tensor(key, &config.modules_to_save) {
                folder.base.insert(name, read(key)?);
            } else {
                return Err(PeftError::UnexpectedTensor { name: key.into(), reason: format!("not part of a {} adapter", config.peft_type) });
            }
        }
        Ok(folder)
    }

    /// Every tensor of the file.
    pub fn tensors(&self) -> impl Iterator<Item = &HfTensor> {
        self.modules.values().flat_map(|m| m.values()).chain(&self.prompt).chain(self.base.values())
    }

    /// The tensor `suffix` of `module`, or a missing-tensor error naming its key.
    pub fn tensor(&self, module: &str, suffix: &str) -> Result<&HfTensor> {
        self.modules.get(module).and_then(|m| m.get(suffix)).ok_or_else(|| PeftError::MissingTensor(crate::keys::key(module, suffix)))
    }
}

/// Writes an adapter folder: `entries` to `adapter_model.safetensors` (with peft's `format`
/// metadata) and `config` to `adapter_config.json`. Each file appears whole or not at all.
pub fn write_folder(dir: &Path, config: &serde_json::Value, entries: &[TensorEntry]) -> Result<()> {
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_files(dir, WEIGHTS_FILE, Some(meta), config, entries)
}

/// Writes `entries` to `dir/weights` and `config` to `dir/adapter_config.json`, each whole or
/// not at all (the writer of every adapter folder format).
pub(crate) fn write_files(dir: &Path, weights: &str, meta: Option<HashMap<String, String>>, config: &serde_json::Value, entries: &[TensorEntry]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| PeftError::Io { path: dir.display().to_string(), source })?;
    let weights = dir.join(weights);
    write_bytes_atomic(&weights, &serialize(entries, meta, &weights.display().to_string())?)?;
    let text = serde_json::to_string_pretty(config).map_err(|source| PeftError::Json { path: CONFIG_FILE.into(), source })?;
    write_bytes_atomic(&dir.join(CONFIG_FILE), (text + "\n").as_bytes())
}

impl HfTensor {
    /// The tensor `key` of a safetensors file, in `f32`; a NaN or infinity is a typed error.
    pub fn read(file: &safetensors::SafeTensors<'_>, key: &str) -> Result<Self> {
        let (shape, values) = read_finite_f32(file, key)?;
        let dtype = file.tensor(key).map_err(|e| PeftError::Safetensors { path: key.into(), reason: e.to_string() })?.dtype();
        Ok(Self { key: key.into(), dtype, shape, values })
    }

    /// An HF `[rows, cols]` matrix in Burn's layout `[cols, rows]`.
    pub fn to_burn_matrix(&self) -> Result<TensorData> {
        match self.shape.as_slice() {
            &[rows, cols] => Ok(TensorData::new(transpose(&self.values, rows, cols), [cols, rows])),
            other => Err(PeftError::ShapeMismatch { name: self.key.clone(), expected: vec![0, 0], actual: other.to_vec() }),
        }
    }

    /// The values as a vector `[n]`.
    pub fn to_vector(&self) -> TensorData {
        TensorData::new(self.values.clone(), [self.values.len()])
    }
}

/// The `f32` values of adapter data.
pub fn values_f32(data: &TensorData) -> Vec<f32> {
    data.clone().convert::<f32>().into_vec::<f32>().unwrap_or_default()
}

/// A Burn `[rows, cols]` matrix as the HF tensor `key`, `[cols, rows]`.
pub fn hf_matrix(key: String, data: &TensorData) -> TensorEntry {
    let shape = data.shape.to_vec();
    TensorEntry::f32(key, vec![shape[1], shape[0]], &transpose(&values_f32(data), shape[0], shape[1]))
}
