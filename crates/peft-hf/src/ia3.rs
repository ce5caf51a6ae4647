//! IA3 in HF peft's folder, both ways: `ia3_l` is `[1, in]` on feed-forward modules (the input is
//! scaled) and `[out, 1]` on the others.

use std::collections::{BTreeMap, BTreeSet};

use peft_core::checkpoint::TensorEntry;
use peft_core::{AdapterTensors, LayerKind, PeftError, Result, TargetModules, Targeting};
use peft_lora::Ia3Config;

use crate::WeightMap;
use crate::folder::{AdapterFolder, values_f32};
use crate::keys::key;

/// The file's shape of an `ia3_l` of `n` values.
fn file_shape(n: usize, feedforward: bool) -> Vec<usize> {
    if feedforward { vec![1, n] } else { vec![n, 1] }
}

/// Our config and values for the IA3 adapter in `folder`.
pub(crate) fn to_ours(folder: &AdapterFolder, map: &WeightMap) -> Result<(Ia3Config, AdapterTensors)> {
    let mut tensors = AdapterTensors::new();
    let mut feedforward = Vec::new();
    for module in folder.modules.keys() {
        let l = folder.tensor(module, "ia3_l")?;
        let ff = folder.config.is_feedforward(module)?;
        let ok = l.shape.len() == 2 && if ff { l.shape[0] == 1 } else { l.shape[1] == 1 };
        if !ok {
            return Err(PeftError::ShapeMismatch { name: l.key.clone(), expected: file_shape(l.values.len(), ff), actual: l.shape.clone() });
        }
        let ours = map.to_ours(module);
        if ff {
            feedforward.push(ours.clone());
        }
        tensors.insert(ours, BTreeMap::from([("scale".to_string(), l.to_vector())]));
    }
    if tensors.is_empty() {
        return Err(PeftError::MissingTensor(key("<module>", "ia3_l (the adapter has no IA3 tensors)")));
    }
    let modules: Vec<&String> = tensors.keys().collect();
    let config = Ia3Config::new(Targeting::names(&modules)).with_feedforward_modules(TargetModules::names(&feedforward));
    Ok((config, tensors))
}

/// The IA3 adapter `tensors` in peft's names and layout, and its config fields.
pub(crate) fn from_ours(config: &Ia3Config, tensors: &AdapterTensors, map: &WeightMap) -> Result<(Vec<TensorEntry>, serde_json::Value)> {
    let (mut entries, mut targets, mut ff_modules) = (Vec::new(), BTreeSet::new(), BTreeSet::new());
    for (module, values) in tensors {
        let l = values.get("scale").ok_or_else(|| PeftError::MissingTensor(format!("{module}.scale")))?;
        let ff = config.feedforward_modules.matches(module, LayerKind::Linear)?;
        let hf_module = map.to_hf(module);
        entries.push(TensorEntry::f32(key(&hf_module, "ia3_l"), file_shape(l.shape[0], ff), &values_f32(l)));
        if ff {
            ff_modules.insert(hf_module.clone());
        }
        targets.insert(hf_module);
    }
    let json = serde_json::json!({
        "peft_type": "IA3",
        "target_modules": targets,
        "feedforward_modules": ff_modules,
        "fan_in_fan_out": map.linear_in_out(),
        "init_ia3_weights": true,
        "modules_to_save": null,
    });
    Ok((entries, json))
}
