//! One adapter of a model, whatever its methods, as one safetensors file: the checkpoint of a
//! composition ([`ConfigUnion`](crate::ConfigUnion)) or of any adapter no other format holds.
//!
//! Key layout: `<module path>.adapters.<adapter name>.<parameter path>`, module paths as the
//! model walk reports them (`encoder.layer.0.output.layer_norm`), parameter paths as inside the
//! method (`down.weight`, `keys`, `lora_a`...), values f32 in Burn's layout. The config is not in
//! the file: attach the adapter with the same config, then load its values.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::TensorData;
use burn::tensor::backend::Backend;

use crate::checkpoint::{TensorEntry, parse, read_bytes, read_finite_f32, write_atomic};
use crate::{AdapterTensors, PeftError, PeftModel, Result};

/// The metadata key naming the adapter a file holds.
const ADAPTER_KEY: &str = "adapter";

/// Writes adapter `name` of `model` to `path` (all or nothing).
pub fn save_adapter_file<B: Backend, M: PeftModel<B>>(model: &mut M, name: &str, path: &Path) -> Result<()> {
    let tensors = model.adapter_tensors(name)?;
    if tensors.is_empty() {
        return Err(PeftError::UnknownAdapter { name: name.into(), known: model.adapter_names() });
    }
    let mut entries = Vec::new();
    for (module, params) in &tensors {
        for (param, data) in params {
            let values = data.clone().convert::<f32>().into_vec::<f32>().map_err(|e| PeftError::InvalidConfig(format!("{module}.{param}: {e:?}")))?;
            entries.push(TensorEntry::f32(format!("{module}.adapters.{name}.{param}"), data.shape.to_vec(), &values));
        }
    }
    write_atomic(path, &entries, Some(HashMap::from([(ADAPTER_KEY.to_string(), name.to_string())])))
}

/// Reads the values of adapter `name` from `path` into `model`, which carries the adapter
/// already (attached with the config it was saved with). A tensor the model's adapter does not
/// have, a missing one, a shape that differs or a NaN is a typed error and changes nothing.
pub fn load_adapter_file<B: Backend, M: PeftModel<B>>(model: &mut M, name: &str, path: &Path) -> Result<()> {
    let bytes = read_bytes(path)?;
    let label = path.display().to_string();
    let file = parse(&bytes, &label)?;
    let infix = format!(".adapters.{name}.");
    let mut tensors = AdapterTensors::new();
    for key in file.names() {
        let (module, param) = key.split_once(&infix).ok_or_else(|| PeftError::UnexpectedTensor { name: key.into(), reason: format!("not a tensor of adapter `{name}` (`<module>{infix}<param>`)") })?;
        let (shape, values) = read_finite_f32(&file, key)?;
        tensors.entry(module.to_string()).or_default().insert(param.to_string(), TensorData::new(values, shape));
    }
    model.set_adapter_tensors(name, tensors)
}
