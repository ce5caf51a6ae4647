//! Merging an HF peft adapter into a checkpoint with no model code (`peft merge`), for any
//! architecture whose adapted weights are linear weights `[out, in]` (`[in, out]` with
//! `fan_in_fan_out`, as GPT-2's Conv1D) or embeddings: LoRA, rsLoRA, rank and alpha patterns,
//! DoRA, the LoRA bias, LoRA on embeddings, and IA3.
//!
//! Each adapted module becomes a one-layer model (a `Linear` or an `Embedding` carrying the
//! adapter), loaded by the same method pieces as a whole model and merged by the methods' own
//! `merge`, so a checkpoint merge and a model merge cannot disagree. The output has exactly the
//! base file's tensor names, shapes and dtypes, like peft's `merge_and_unload`.

use std::collections::BTreeMap;

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use peft_core::checkpoint::{TensorEntry, from_f32, to_f32, transpose};
use peft_core::{Adaptable, AdapterTensors, PeftError, PeftModel, Result, Tuned, Tuner};
use peft_lora::{Lora, WeightAdapter, WeightAdapterConfig};
use safetensors::SafeTensors;

use crate::folder::{HfTensor, WEIGHTS_FILE};
use crate::{AdapterFolder, WeightMap, ia3, lora};

/// Summary of a merge.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeSummary {
    /// The adapted module paths.
    pub modules: Vec<String>,
    /// The method (`LORA` or `IA3`).
    pub method: String,
}

/// `base` with the adapter of `config` and `values` (Burn's layout) merged into it.
fn merged<B: Backend, L: Adaptable<B>, T: Tuner<B, L>>(base: L, config: &T::Config, module: &str, values: BTreeMap<String, TensorData>) -> Result<Tuned<B, L, T>> {
    let mut layer = Tuned::new(base);
    let adapter = T::init(config, &mut layer.base, module)?;
    layer.add_adapter(WEIGHTS_FILE, adapter)?;
    layer.set_adapter_tensors(WEIGHTS_FILE, AdapterTensors::from([(String::new(), values)])).map_err(|e| match e {
        PeftError::ShapeMismatch { name, expected, actual } => PeftError::ShapeMismatch { name: format!("{module}{name} (adapter, our layout)"), expected, actual },
        e => e,
    })?;
    layer.merge(module, true)?;
    Ok(layer)
}

fn param<B: Backend, const D: usize>(values: Vec<f32>, shape: [usize; D], device: &B::Device) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

fn host(t: Tensor<impl Backend, 2>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default()
}

/// Merges the adapter `folder` into `base`, returning every tensor of `base` with the adapted
/// ones replaced. The arithmetic runs on `device`.
pub fn merge_checkpoint<B: Backend>(base: &SafeTensors<'_>, folder: &AdapterFolder, device: &B::Device) -> Result<(Vec<TensorEntry>, MergeSummary)> {
    let config = &folder.config;
    // Without a model, HF's module paths are the layers' paths.
    let map = WeightMap::new();
    let (method, tensors) = match config.peft_type.as_str() {
        "LORA" => lora::to_ours(folder, &map).map(|(c, t)| (WeightAdapterConfig::Lora(c), t))?,
        "IA3" => ia3::to_ours(folder, &map).map(|(c, t)| (WeightAdapterConfig::Ia3(c), t))?,
        other => {
            let supported = "LORA, IA3: the methods that change weights; prefix and prompt tuning add virtual tokens, so load them with the model instead";
            return Err(PeftError::UnsupportedValue { key: "peft_type to merge".into(), value: other.into(), supported: supported.into() });
        }
    };
    // Base tensors saved with the adapter (modules_to_save, embedding layers), by base name.
    let mut saved: BTreeMap<&str, &HfTensor> = folder.base.iter().map(|(name, t)| (name.as_str(), t)).collect();
    let mut replaced: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (module, values) in tensors {
        let (weight_key, bias_key) = (format!("{module}.weight"), format!("{module}.bias"));
        let view = base.tensor(&weight_key).map_err(|_| PeftError::MissingTensor(weight_key.clone()))?;
        let shape = view.shape().to_vec();
        let &[rows, cols] = shape.as_slice() else {
            let feature = format!("merging into a {}-D weight {shape:?} without model code (2-D weights merge)", shape.len());
            return Err(PeftError::NotSupportedOn { feature, path: weight_key });
        };
        // A base weight saved with the adapter is what the adapter was trained on.
        let w = match saved.remove(weight_key.as_str()) {
            Some(t) if t.shape != shape => return Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: shape, actual: t.shape.clone() }),
            Some(t) => t.values.clone(),
            None => to_f32(&weight_key, &view)?,
        };
        let embedding = folder.modules[&module].contains_key("lora_embedding_A");
        let (weight, bias) = match &method {
            WeightAdapterConfig::Lora(c) if embedding => {
                let layer = merged::<B, _, Lora<B>>(Embedding { weight: param(w, [rows, cols], device) }, c, &module, values)?;
                (host(layer.base.weight.val()), None)
            }
            _ => {
                // Burn's `Linear` keeps `[in, out]`, which is how `fan_in_fan_out` checkpoints store it.
                let in_out = config.fan_in_fan_out;
                let (d_in, d_out) = if in_out { (rows, cols) } else { (cols, rows) };
                let weight = param(if in_out { w } else { transpose(&w, rows, cols) }, [d_in, d_out], device);
                let bias = base.tensor(&bias_key).ok().map(|v| to_f32(&bias_key, &v)).transpose()?.map(|b| param(b, [d_out], device));
                let layer = merged::<B, _, WeightAdapter<B>>(Linear { weight, bias }, &method, &module, values)?;
                let w = host(layer.base.weight.val());
                let bias = layer.base.bias.map(|b| b.val().into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default());
                (if in_out { w } else { transpose(&w, d_in, d_out) }, bias)
            }
        };
        replaced.insert(weight_key, weight);
        if let Some(bias) = bias {
            replaced.insert(bias_key, bias);
        }
    }
    let mut names: Vec<&str> = base.names();
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let view = base.tensor(name).map_err(|e| PeftError::Safetensors { path: "base".into(), reason: e.to_string() })?;
        let values = match (replaced.remove(name), saved.remove(name)) {
            (Some(values), _) => values,
            (None, Some(t)) if t.shape != view.shape() => {
                return Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: view.shape().to_vec(), actual: t.shape.clone() });
            }
            (None, Some(t)) => t.values.clone(),
            (None, None) => {
                entries.push(TensorEntry::from_view(name, &view));
                continue;
            }
        };
        entries.push(TensorEntry { name: name.into(), dtype: view.dtype(), shape: view.shape().to_vec(), data: from_f32(&values, view.dtype())? });
    }
    if let Some((target, t)) = saved.into_iter().next() {
        return Err(PeftError::MissingTensor(format!("{target} (for adapter tensor {})", t.key)));
    }
    Ok((entries, MergeSummary { modules: folder.modules.keys().cloned().collect(), method: config.peft_type.clone() }))
}
