//! Checkpoints that a run resumes from exactly: the trainable parameters by path, the optimizer's
//! state, where the batch stream stands, and the settings they were made with; plus the adapter as
//! a peft folder, to use as it is. Each checkpoint is written in a temporary folder renamed into
//! place at the end, so a run killed at any moment leaves the last complete one usable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use peft_core::checkpoint::{TensorEntry, parse, read_bytes, read_f32, write_atomic, write_bytes_atomic};
use peft_core::path::{ModulePath, ParamMapper, ParamVisitor, map_params, visit_params};
use peft_core::{PeftError, Result};
use serde::{Deserialize, Serialize};

use crate::Cursor;

/// What a checkpoint records besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps done.
    pub step: usize,
    /// Steps the run makes in all.
    pub total_steps: usize,
    /// The next batch.
    pub cursor: Cursor,
    /// The settings that decide what training computes ([`crate::TrainConfig::fingerprint`]).
    pub fingerprint: String,
}

const STATE: &str = "state.json";
const TRAINABLE: &str = "trainable.safetensors";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PeftError + '_ {
    move |source| PeftError::Io { path: path.display().to_string(), source }
}

struct PathIds;
impl<B: Backend> ParamMapper<B> for PathIds {
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        Param::from_mapped_value(ParamId::from(peft_core::path::fnv1a(peft_core::path::FNV_OFFSET, &path.path())), tensor, mapper)
    }
}

/// `model` with every parameter's id derived from its path, so that optimizer state saved by id
/// finds its parameter again in a model rebuilt the same way.
pub fn ids_from_paths<B: Backend, M: Module<B>>(model: M) -> M {
    map_params(model, &mut PathIds)
}

struct Trainable(Vec<TensorEntry>);
impl<B: Backend> ParamVisitor<B> for Trainable {
    fn visit<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let data = value.into_data().convert::<f32>();
            self.0.push(TensorEntry::f32(path.path(), data.shape.to_vec(), &data.into_vec::<f32>().unwrap_or_default()));
        }
    }
}

struct Restore {
    values: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    error: Option<PeftError>,
}
impl<B: Backend> ParamMapper<B> for Restore {
    fn map<const D: usize>(&mut self, path: &ModulePath, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some((shape, values)) = self.values.remove(&path.path()) else { return param };
        let expected = param.shape().dims::<D>().to_vec();
        if shape != expected {
            self.error.get_or_insert(PeftError::ShapeMismatch { name: path.path(), expected, actual: shape });
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let value = Tensor::<B, D>::from_data(TensorData::new(values, shape), &tensor.device()).set_require_grad(tensor.is_require_grad());
        Param::from_mapped_value(id, value, mapper)
    }
}

/// The trainable parameters of `model`, by path, into `dir`.
pub fn save_trainable<B: Backend, M: Module<B>>(model: &M, dir: &Path) -> Result<()> {
    let mut trainable = Trainable(Vec::new());
    visit_params(model, &mut trainable);
    write_atomic(&dir.join(TRAINABLE), &trainable.0, None)
}

/// `model` with the trainable parameters saved in `dir`; every saved one must find its place.
pub fn load_trainable<B: Backend, M: Module<B>>(model: M, dir: &Path) -> Result<M> {
    let path = dir.join(TRAINABLE);
    let bytes = read_bytes(&path)?;
    let file = parse(&bytes, &path.display().to_string())?;
    let values = file.names().into_iter().map(|n| read_f32(&file, n).map(|v| (n.to_string(), v))).collect::<Result<_>>()?;
    let mut restore = Restore { values, error: None };
    let model = map_params(model, &mut restore);
    if let Some(e) = restore.error {
        return Err(e);
    }
    if let Some(name) = restore.values.keys().next() {
        return Err(PeftError::UnexpectedTensor { name: name.clone(), reason: "the checkpoint has a parameter the model does not".into() });
    }
    Ok(model)
}

/// The checkpoints folder of a run in `out`.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

/// Writes a checkpoint of step `state.step`: `fill` writes the tensors into a temporary folder,
/// which is renamed to `checkpoints/step-N` once complete.
pub fn save_checkpoint(out: &Path, state: &TrainState, fill: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let root = checkpoints_dir(out);
    let tmp = root.join(format!(".step-{}.tmp-{}", state.step, std::process::id()));
    let done = root.join(format!("step-{}", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let written = fill(&tmp).and_then(|()| {
        let text = serde_json::to_string_pretty(state).map_err(|source| PeftError::Json { path: STATE.into(), source })?;
        write_bytes_atomic(&tmp.join(STATE), text.as_bytes())
    });
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    std::fs::rename(&tmp, &done).map_err(io(&done))?;
    Ok(done)
}

/// The newest complete checkpoint in `out` and its state; leftovers of interrupted writes are
/// removed.
pub fn latest_checkpoint(out: &Path) -> Result<Option<(PathBuf, TrainState)>> {
    let root = checkpoints_dir(out);
    let Ok(entries) = std::fs::read_dir(&root) else { return Ok(None) };
    let mut best: Option<(usize, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(".step-") {
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        let step = name.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok());
        if let Some(step) = step
            && entry.path().join(STATE).exists()
            && best.as_ref().is_none_or(|(b, _)| step > *b)
        {
            best = Some((step, entry.path()));
        }
    }
    match best {
        None => Ok(None),
        Some((_, dir)) => {
            let state: TrainState = peft_core::checkpoint::read_json(&dir.join(STATE))?;
            Ok(Some((dir, state)))
        }
    }
}
