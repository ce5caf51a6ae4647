//! Merging an HF peft adapter into a checkpoint, with no model code (`peft merge`).
//!
//! Works on the safetensors files alone, for any architecture whose adapted weights are linear
//! weights `[out, in]` (or `[in, out]` with `fan_in_fan_out`, as GPT-2's Conv1D): LoRA, rsLoRA,
//! `rank_pattern`/`alpha_pattern`, DoRA, LoRA on embeddings, and IA3. The output has exactly the
//! base file's tensor names, shapes and dtypes, like peft's `merge_and_unload`.

use std::collections::BTreeMap;

use peft_core::checkpoint::{TensorEntry, from_f32, to_f32, transpose};
use peft_core::{PeftError, Result};
use safetensors::SafeTensors;

use crate::AdapterFolder;
use crate::keys::key;

/// Summary of a merge.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeSummary {
    /// The adapted module paths.
    pub modules: Vec<String>,
    /// The method (`LORA` or `IA3`).
    pub method: String,
}

fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for l in 0..k {
            let x = a[i * k + l];
            if x != 0.0 {
                for j in 0..m {
                    out[i * m + j] += x * b[l * m + j];
                }
            }
        }
    }
    out
}

/// Merges the adapter `folder` into `base`, returning every tensor of `base` with the adapted
/// ones replaced.
pub fn merge_checkpoint(base: &SafeTensors<'_>, folder: &AdapterFolder) -> Result<(Vec<TensorEntry>, MergeSummary)> {
    let config = &folder.config;
    if config.peft_type != "LORA" && config.peft_type != "IA3" {
        return Err(PeftError::UnsupportedValue { key: "peft_type".into(), value: config.peft_type.clone(), supported: "LORA, IA3 (the methods that merge into weights)".into() });
    }
    // Base tensors saved with the adapter (modules_to_save, embedding layers), by base name.
    let mut saved: BTreeMap<&str, &crate::folder::HfTensor> = folder.base.iter().map(|(name, t)| (name.as_str(), t)).collect();
    let mut replaced: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for (path, parts) in &folder.modules {
        let weight_key = format!("{path}.weight");
        let view = base.tensor(&weight_key).map_err(|_| PeftError::MissingTensor(weight_key.clone()))?;
        let shape = view.shape().to_vec();
        if shape.len() != 2 {
            let feature = format!("merging into a {}-D weight {shape:?} without model code (2-D weights merge)", shape.len());
            return Err(PeftError::NotSupportedOn { feature, path: weight_key });
        }
        // A base weight saved with the adapter is what the adapter was trained on.
        let mut w = match saved.remove(weight_key.as_str()) {
            Some(t) if t.shape != shape => return Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: shape, actual: t.shape.clone() }),
            Some(t) => t.values.clone(),
            None => to_f32(&weight_key, &view)?,
        };
        let get = |s: &str| parts.get(s).map(|t| (&t.shape, &t.values));
        if let Some((l_shape, l)) = get("ia3_l") {
            let ff = config.is_feedforward(path)?;
            let (out, inp) = if config.fan_in_fan_out { (shape[1], shape[0]) } else { (shape[0], shape[1]) };
            let expected = if ff { vec![1, inp] } else { vec![out, 1] };
            if *l_shape != expected {
                return Err(PeftError::ShapeMismatch { name: key(path, "ia3_l"), expected, actual: l_shape.clone() });
            }
            for (idx, v) in w.iter_mut().enumerate() {
                let (i, j) = (idx / shape[1], idx % shape[1]);
                let (o, n) = if config.fan_in_fan_out { (j, i) } else { (i, j) };
                *v *= if ff { l[n] } else { l[o] };
            }
            if !ff {
                let bias_key = format!("{path}.bias");
                if let Ok(bv) = base.tensor(&bias_key) {
                    let bias: Vec<f32> = to_f32(&bias_key, &bv)?.iter().zip(l).map(|(b, s)| b * s).collect();
                    replaced.insert(bias_key, bias);
                }
            }
        } else if let (Some((a_shape, a)), Some((b_shape, b))) = (get("lora_embedding_A"), get("lora_embedding_B")) {
            // A [r, vocab], B [dim, r]; W [vocab, dim] += s·Aᵀ·Bᵀ.
            let (r, scaling) = config.lora_scaling(path)?;
            check_rank(path, r, a_shape[0])?;
            let delta = matmul(&transpose(a, r, a_shape[1]), &transpose(b, b_shape[0], r), a_shape[1], r, b_shape[0]);
            if delta.len() != w.len() {
                return Err(PeftError::ShapeMismatch { name: key(path, "lora_embedding_A"), expected: shape.clone(), actual: vec![a_shape[1], b_shape[0]] });
            }
            w.iter_mut().zip(&delta).for_each(|(w, d)| *w += scaling as f32 * d);
        } else {
            let (Some((a_shape, a)), Some((b_shape, b))) = (get("lora_A.weight"), get("lora_B.weight")) else {
                return Err(PeftError::MissingTensor(key(path, "lora_A.weight / lora_B.weight")));
            };
            let (r, scaling) = config.lora_scaling(path)?;
            check_rank(path, r, a_shape[0])?;
            let (out, inp) = (b_shape[0], a_shape[1]);
            let expected = if config.fan_in_fan_out { vec![inp, out] } else { vec![out, inp] };
            if shape != expected || b_shape[1] != r {
                return Err(PeftError::ShapeMismatch { name: key(path, "lora_B.weight"), expected: shape.clone(), actual: expected });
            }
            // ΔW = s·B·A in [out, in]; W in the same layout unless fan_in_fan_out.
            let mut delta = matmul(b, a, out, r, inp);
            delta.iter_mut().for_each(|d| *d *= scaling as f32);
            let mut w_oi = if config.fan_in_fan_out { transpose(&w, inp, out) } else { w.clone() };
            w_oi.iter_mut().zip(&delta).for_each(|(w, d)| *w += d);
            if let Some((m_shape, m)) = get("lora_magnitude_vector") {
                if *m_shape != vec![out] {
                    return Err(PeftError::ShapeMismatch { name: key(path, "lora_magnitude_vector"), expected: vec![out], actual: m_shape.clone() });
                }
                for o in 0..out {
                    let row = &mut w_oi[o * inp..(o + 1) * inp];
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    let factor = m[o] / norm;
                    row.iter_mut().for_each(|v| *v *= factor);
                }
            }
            w = if config.fan_in_fan_out { transpose(&w_oi, out, inp) } else { w_oi };
            if let Some((_, lb)) = get("lora_B.bias") {
                let bias_key = format!("{path}.bias");
                let bv = base.tensor(&bias_key).map_err(|_| PeftError::MissingTensor(bias_key.clone()))?;
                let bias: Vec<f32> = to_f32(&bias_key, &bv)?.iter().zip(lb).map(|(b, d)| b + scaling as f32 * d).collect();
                replaced.insert(bias_key, bias);
            }
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(PeftError::NonFinite { path: path.clone(), adapter: "adapter_model.safetensors".into() });
        }
        replaced.insert(weight_key, w);
    }
    let mut names: Vec<&str> = base.names();
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        let view = base.tensor(name).map_err(|e| PeftError::Safetensors { path: "base".into(), reason: e.to_string() })?;
        let entry = if let Some(values) = replaced.remove(name) {
            TensorEntry { name: name.into(), dtype: view.dtype(), shape: view.shape().to_vec(), data: from_f32(&values, view.dtype())? }
        } else if let Some(t) = saved.remove(name) {
            if t.shape != view.shape() {
                return Err(PeftError::ShapeMismatch { name: t.key.clone(), expected: view.shape().to_vec(), actual: t.shape.clone() });
            }
            TensorEntry { name: name.into(), dtype: view.dtype(), shape: view.shape().to_vec(), data: from_f32(&t.values, view.dtype())? }
        } else {
            TensorEntry::from_view(name, &view)
        };
        entries.push(entry);
    }
    if let Some((target, t)) = saved.into_iter().next() {
        return Err(PeftError::MissingTensor(format!("{target} (for adapter tensor {})", t.key)));
    }
    Ok((entries, MergeSummary { modules: folder.modules.keys().cloned().collect(), method: config.peft_type.clone() }))
}

fn check_rank(path: &str, config_rank: usize, tensor_rank: usize) -> Result<()> {
    if config_rank != tensor_rank {
        return Err(PeftError::ShapeMismatch { name: key(path, "lora_A"), expected: vec![config_rank], actual: vec![tensor_rank] });
    }
    Ok(())
}
