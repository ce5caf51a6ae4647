//! Hugging Face checkpoints (`model.safetensors`) into Burn modules: the explicit mapping between
//! a Burn model's parameter paths and HF tensor names, and the loader built on it.
//!
//! A Burn path such as `model.layers.0.self_attn.q_proj.base.weight` becomes an HF name in three
//! steps: wrappers' `base` segments are dropped (`model.layers.0.self_attn.q_proj.weight`), the
//! module part goes through the map's renames, in order, and the parameter's own name follows the
//! layer type (`LayerNorm`/`RmsNorm`'s `gamma`/`beta` are HF's `weight`/`bias`). Burn's `Linear`
//! keeps weights `[in, out]`, PyTorch's `nn.Linear` `[out, in]`: they are transposed on the way,
//! unless the checkpoint stores `[in, out]` already (GPT-2's `Conv1D`, HF peft's `fan_in_fan_out`).

use std::collections::BTreeSet;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use peft_core::checkpoint::{TensorEntry, read_f32, transpose};
use peft_core::path::{ModulePath, ParamVisitor, visit_params};
use peft_core::weights::{WeightSource, assign_base_weights};
use peft_core::{Adaptable, PeftError, Result};
use safetensors::SafeTensors;

/// The mapping between Burn module paths and HF module paths, extensible for any model.
///
/// ```
/// use peft_hf::WeightMap;
/// // BERT: Rust has no field named `self`, and Burn fields are snake case.
/// let map = WeightMap::new().rename("self_attn", "self").rename("layer_norm", "LayerNorm");
/// assert_eq!(map.to_hf("encoder.layer.0.attention.self_attn.query"), "encoder.layer.0.attention.self.query");
/// assert_eq!(map.to_ours("encoder.layer.0.output.LayerNorm"), "encoder.layer.0.output.layer_norm");
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightMap {
    renames: Vec<(Vec<String>, Vec<String>)>,
    linear_in_out: bool,
    torch_linears: Vec<String>,
    fallback_prefixes: Vec<(String, String)>,
}

fn segments(path: &str) -> Vec<String> {
    if path.is_empty() { Vec::new() } else { path.split('.').map(String::from).collect() }
}

fn replace_all(path: &[String], from: &[String], to: &[String]) -> Vec<String> {
    if from.is_empty() {
        return path.to_vec();
    }
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(path[i].clone());
            i += 1;
        }
    }
    out
}

/// What to do with a tensor between the file and the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Same layout.
    Same,
    /// A 2-D tensor transposed.
    Transposed,
}

impl WeightMap {
    /// The identity mapping: Burn field names equal HF module names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the dotted segment sequence `ours` with `hf` wherever it occurs in a Burn path
    /// (and back). Renames apply in the order they were added (backwards for HF → Burn).
    pub fn rename(mut self, ours: &str, hf: &str) -> Self {
        self.renames.push((segments(ours), segments(hf)));
        self
    }

    /// Whether the checkpoint stores linear weights `[in, out]` (GPT-2's `Conv1D`).
    pub fn linear_weights_in_out(mut self, in_out: bool) -> Self {
        self.linear_in_out = in_out;
        self
    }

    /// A module stored `[out, in]` (a torch `nn.Linear`) in a checkpoint whose other linear
    /// weights are `[in, out]` (GPT-2's `score` head among its `Conv1D`s).
    pub fn torch_linear(mut self, ours: &str) -> Self {
        self.torch_linears.push(ours.to_string());
        self
    }

    /// Another spelling of a name prefix that some checkpoints use: a name starting with `ours`
    /// that the file lacks is looked up with `file` in its place (`("", "bert.")` for
    /// `BertForMaskedLM` files, `("transformer.", "")` for GPT-2 files saved without the head).
    pub fn fallback_prefix(mut self, ours: &str, file: &str) -> Self {
        self.fallback_prefixes.push((ours.to_string(), file.to_string()));
        self
    }

    /// Whether linear weights are stored `[in, out]` in the checkpoint.
    pub fn linear_in_out(&self) -> bool {
        self.linear_in_out
    }

    /// The tensor of `file` that HF name `name` stands for: itself, or another spelling of its
    /// prefix ([`fallback_prefix`](Self::fallback_prefix)); `None` when the file has neither.
    pub fn find_in(&self, name: &str, file: &SafeTensors<'_>) -> Option<String> {
        let exists = |n: &str| file.tensor(n).is_ok();
        if exists(name) {
            return Some(name.to_string());
        }
        self.fallback_prefixes.iter().filter_map(|(ours, prefix)| name.strip_prefix(ours.as_str()).map(|rest| format!("{prefix}{rest}"))).find(|n| exists(n))
    }

    /// The HF module path of a Burn module path (without wrappers' `base` segments).
    pub fn to_hf(&self, ours: &str) -> String {
        self.renames.iter().fold(segments(ours), |p, (o, h)| replace_all(&p, o, h)).join(".")
    }

    /// The Burn module path of an HF module path.
    pub fn to_ours(&self, hf: &str) -> String {
        self.renames.iter().rev().fold(segments(hf), |p, (o, h)| replace_all(&p, h, o)).join(".")
    }

    /// The Burn module paths an HF module path may stand for: [`to_ours`](Self::to_ours), then
    /// the same after each [`fallback_prefix`](Self::fallback_prefix) spelling of the file
    /// (`bert.encoder.layer.0` → `encoder.layer.0`).
    pub fn to_ours_candidates(&self, hf: &str) -> Vec<String> {
        let mut out = vec![self.to_ours(hf)];
        out.extend(self.fallback_prefixes.iter().filter_map(|(ours, file)| hf.strip_prefix(file.as_str()).map(|rest| self.to_ours(&format!("{ours}{rest}")))));
        out
    }

    /// The HF tensor name and layout of the Burn parameter `plain_path` held by a module of Burn
    /// type `owner` (`Struct:Linear`, `Struct:LayerNorm`, ...).
    pub fn param_to_hf(&self, plain_path: &str, owner: &str) -> (String, Layout) {
        let (module, leaf) = plain_path.rsplit_once('.').unwrap_or(("", plain_path));
        let kind = owner.strip_prefix("Struct:").unwrap_or(owner);
        let (leaf, layout) = match (kind, leaf) {
            ("LayerNorm" | "RmsNorm", "gamma") => ("weight", Layout::Same),
            ("LayerNorm", "beta") => ("bias", Layout::Same),
            ("Linear", "weight") if !self.linear_in_out || self.torch_linears.iter().any(|m| m == module) => ("weight", Layout::Transposed),
            (_, leaf) => (leaf, Layout::Same),
        };
        let module = self.to_hf(module);
        (if module.is_empty() { leaf.to_string() } else { format!("{module}.{leaf}") }, layout)
    }
}

/// What [`load_hf_weights`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Parameters assigned.
    pub loaded: usize,
    /// Tensors of the file that no parameter used (tied heads, buffers, unused heads).
    pub unused: Vec<String>,
}

struct FileSource<'a, 'b> {
    file: &'a SafeTensors<'b>,
    map: &'a WeightMap,
    partial: bool,
    used: BTreeSet<String>,
    loaded: usize,
}

impl FileSource<'_, '_> {
    fn find(&self, name: &str) -> Option<String> {
        self.map.find_in(name, self.file)
    }
}

impl WeightSource for FileSource<'_, '_> {
    fn take(&mut self, path: &ModulePath, expected: &[usize]) -> Result<Option<TensorData>> {
        let (name, layout) = self.map.param_to_hf(&path.plain_path(), path.owner());
        let Some(found) = self.find(&name) else {
            return if self.partial { Ok(None) } else { Err(PeftError::MissingTensor(name)) };
        };
        let (file_shape, mut values) = read_f32(self.file, &found)?;
        let shape = match (layout, file_shape.as_slice()) {
            (Layout::Transposed, &[rows, cols]) => {
                values = transpose(&values, rows, cols);
                vec![cols, rows]
            }
            _ => file_shape.clone(),
        };
        if shape != expected {
            let expected = match layout {
                Layout::Transposed => expected.iter().rev().copied().collect(),
                Layout::Same => expected.to_vec(),
            };
            return Err(PeftError::ShapeMismatch { name: found, expected, actual: file_shape });
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(PeftError::NonFiniteTensor(found));
        }
        self.used.insert(found);
        self.loaded += 1;
        Ok(Some(TensorData::new(values, shape)))
    }
}

/// Loads every base parameter of `model` from an HF safetensors file (f32, f16 or bf16) through
/// `map`. A parameter without its tensor, a wrong shape or a non-finite value is a typed error
/// naming the tensor; tensors the model does not use are listed in the report. With `partial`,
/// parameters whose tensor the file lacks keep their values (for files holding a few modules,
/// such as peft's `modules_to_save`).
pub fn load_hf_weights<B: Backend, M: Module<B>>(model: M, file: &SafeTensors<'_>, map: &WeightMap, partial: bool) -> Result<(M, LoadReport)> {
    let mut source = FileSource { file, map, partial, used: BTreeSet::new(), loaded: 0 };
    let model = assign_base_weights(model, &mut source)?;
    let mut unused: Vec<String> = file.names().into_iter().filter(|n| !source.used.contains(*n)).map(String::from).collect();
    unused.sort();
    Ok((model, LoadReport { loaded: source.loaded, unused }))
}

struct Export<'a> {
    map: &'a WeightMap,
    keep: &'a dyn Fn(&str) -> bool,
    out: Vec<TensorEntry>,
}

impl<B: Backend> ParamVisitor<B> for Export<'_> {
    fn visit<const D: usize>(&mut self, path: &ModulePath, param: &Param<Tensor<B, D>>) {
        if path.in_adapter() {
            return;
        }
        let (name, layout) = self.map.param_to_hf(&path.plain_path(), path.owner());
        if !(self.keep)(&name) {
            return;
        }
        let data = param.val().into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data.into_vec::<f32>().unwrap_or_default();
        self.out.push(match (layout, shape.as_slice()) {
            (Layout::Transposed, &[rows, cols]) => TensorEntry::f32(name, vec![cols, rows], &transpose(&values, rows, cols)),
            _ => TensorEntry::f32(name, shape, &values),
        });
    }
}

/// The base weights of `model` (adapters left out) whose HF name `keep` accepts, as f32 tensors
/// with HF names and layouts: after merging, all of them make a checkpoint `transformers` loads.
/// Only the kept ones are copied off the device.
pub fn export_hf_weights<B: Backend, M: Module<B>>(model: &M, map: &WeightMap, keep: &dyn Fn(&str) -> bool) -> Vec<TensorEntry> {
    let mut export = Export { map, keep, out: Vec::new() };
    visit_params(model, &mut export);
    export.out
}

/// A model that reads HF checkpoints: its weight map, and how base weights are assigned.
pub trait HfCheckpoint<B: Backend>: Adaptable<B> {
    /// How the model's paths map to HF names.
    fn weight_map(&self) -> WeightMap;

    /// Replaces base weights with the tensors of `file`; with `partial`, parameters the file
    /// lacks keep their values. The default suits any struct model.
    fn assign_hf_weights(self, file: &SafeTensors<'_>, partial: bool) -> Result<(Self, LoadReport)> {
        let map = self.weight_map();
        load_hf_weights(self, file, &map, partial)
    }

    /// The base weights whose HF name `keep` accepts, with HF names and layouts (see
    /// [`export_hf_weights`]).
    fn hf_tensors(&self, keep: &dyn Fn(&str) -> bool) -> Vec<TensorEntry> {
        export_hf_weights(self, &self.weight_map(), keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_apply_on_segment_boundaries_both_ways() {
        let map = WeightMap::new().rename("blocks", "model.layers").rename("attn", "self_attn");
        assert_eq!(map.to_hf("blocks.3.attn.q"), "model.layers.3.self_attn.q");
        assert_eq!(map.to_ours("model.layers.3.self_attn.q"), "blocks.3.attn.q");
        assert_eq!(map.to_hf("blocks_x.attn2"), "blocks_x.attn2");
        assert_eq!(map.param_to_hf("blocks.0.attn.q.weight", "Struct:Linear"), ("model.layers.0.self_attn.q.weight".into(), Layout::Transposed));
        assert_eq!(map.param_to_hf("norm.gamma", "Struct:RmsNorm"), ("norm.weight".into(), Layout::Same));
        assert_eq!(map.param_to_hf("ln.beta", "Struct:LayerNorm"), ("ln.bias".into(), Layout::Same));
        let gpt2 = WeightMap::new().linear_weights_in_out(true).torch_linear("score");
        assert_eq!(gpt2.param_to_hf("h.0.attn.c_attn.weight", "Struct:Linear").1, Layout::Same);
        assert_eq!(gpt2.param_to_hf("score.weight", "Struct:Linear").1, Layout::Transposed);
    }
}
