//! Prefix tuning in HF peft's folder, both ways: one `prompt_embeddings
//! [num_virtual_tokens, num_layers·2·token_dim]`, viewed as `[nvt, layers·2, kv_heads, head_dim]`
//! and permuted to `[layers·2, kv_heads, nvt, head_dim]`; entry `2l` holds layer `l`'s keys,
//! `2l + 1` its values (peft's `get_prompt`).

use std::collections::BTreeMap;

use burn::tensor::TensorData;
use peft_core::checkpoint::TensorEntry;
use peft_core::{AdapterTensors, LayerKind, PeftError, Result, Targeting, TunedLayerInfo};
use peft_ptuning::PrefixConfig;

use crate::folder::{AdapterFolder, values_f32};
use crate::host_linear::{Activation, linear};
use crate::keys::PROMPT_EMBEDDINGS;

const PARTS: [&str; 2] = ["keys", "values"];

/// The model's key/value sites, in order: one per attention layer.
fn kv_sites(layers: &[TunedLayerInfo]) -> Vec<String> {
    layers.iter().filter(|l| l.kind == LayerKind::KeyValue).map(|l| l.path.clone()).collect()
}

/// Index of value `h, t, i` of part `entry` in the prompt, for `width = layers·2·token_dim`.
fn prompt_index(t: usize, entry: usize, h: usize, width: usize, token_dim: usize, head_dim: usize) -> usize {
    t * width + entry * token_dim + h * head_dim
}

/// Our config and values for the prefix in `folder`, on a model whose wrapped layers are `layers`.
pub(crate) fn to_ours(folder: &AdapterFolder, layers: &[TunedLayerInfo]) -> Result<(PrefixConfig, AdapterTensors)> {
    let hf = &folder.config;
    let prompt = folder.prompt.as_ref().ok_or_else(|| PeftError::MissingTensor(PROMPT_EMBEDDINGS.into()))?;
    if hf.extra.get("prefix_projection").and_then(serde_json::Value::as_bool) == Some(true) && prompt.shape.len() != 2 {
        return Err(PeftError::UnsupportedValue { key: "prefix_projection".into(), value: "true (unprojected form)".into(), supported: "the projected form peft saves".into() });
    }
    let (layer_count, token_dim, heads) = (hf.extra_usize("num_layers")?, hf.extra_usize("token_dim")?, hf.extra_usize("num_attention_heads")?);
    let sites = kv_sites(layers);
    if sites.len() != layer_count {
        return Err(PeftError::InvalidConfig(format!("the adapter has prefixes for {layer_count} layers, the model has {} attention layers", sites.len())));
    }
    let nvt = hf.num_virtual_tokens.or(prompt.shape.first().copied()).unwrap_or(0);
    let width = layer_count.checked_mul(2).and_then(|w| w.checked_mul(token_dim));
    let Some(width) = width.filter(|&w| prompt.shape == [nvt, w] && heads != 0 && token_dim % heads == 0) else {
        let expected = vec![nvt, width.unwrap_or(usize::MAX)];
        return Err(PeftError::ShapeMismatch { name: format!("{PROMPT_EMBEDDINGS} (num_layers {layer_count} · 2 · token_dim {token_dim}, {heads} heads)"), expected, actual: prompt.shape.clone() });
    };
    let head_dim = token_dim / heads;
    let part = |entry: usize| {
        let mut out = Vec::with_capacity(nvt * token_dim);
        for h in 0..heads {
            for t in 0..nvt {
                let start = prompt_index(t, entry, h, width, token_dim, head_dim);
                out.extend_from_slice(&prompt.values[start..start + head_dim]);
            }
        }
        TensorData::new(out, [heads, nvt, head_dim])
    };
    let mut tensors = AdapterTensors::new();
    for (l, site) in sites.iter().enumerate() {
        tensors.insert(site.clone(), BTreeMap::from([(PARTS[0].to_string(), part(2 * l)), (PARTS[1].to_string(), part(2 * l + 1))]));
    }
    let config = PrefixConfig::new(Targeting::names(&sites)).with_num_virtual_tokens(nvt);
    Ok((config, tensors))
}

/// The prefix `tensors` as peft's one `prompt_embeddings`, and its config fields.
pub(crate) fn from_ours(config: &PrefixConfig, tensors: &AdapterTensors, layers: &[TunedLayerInfo]) -> Result<(Vec<TensorEntry>, serde_json::Value)> {
    if config.gating {
        return Err(PeftError::UnsupportedValue { key: "gating (prefix)".into(), value: "true".into(), supported: "false: peft's prefix tuning has no gate; save a gated prefix with peft_core::adapter_file".into() });
    }
    let sites: Vec<String> = kv_sites(layers).into_iter().filter(|s| tensors.contains_key(s)).collect();
    let first = sites.first().and_then(|s| tensors[s].get(PARTS[0])).ok_or_else(|| PeftError::MissingTensor("keys".into()))?;
    let [heads, nvt, head_dim]: [usize; 3] = first.shape.to_vec().try_into().map_err(|_| PeftError::MissingTensor("keys".into()))?;
    let token_dim = heads * head_dim;
    let width = sites.len() * 2 * token_dim;
    let mut prompt = vec![0.0f32; nvt * width];
    for (l, site) in sites.iter().enumerate() {
        for (j, part) in PARTS.iter().enumerate() {
            let data = tensors[site].get(*part).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{part}")))?;
            if data.shape.to_vec() != [heads, nvt, head_dim] {
                return Err(PeftError::ShapeMismatch { name: format!("{site}.{part}"), expected: vec![heads, nvt, head_dim], actual: data.shape.to_vec() });
            }
            let values = values_f32(data);
            for h in 0..heads {
                for t in 0..nvt {
                    let src = (h * nvt + t) * head_dim;
                    let dst = prompt_index(t, 2 * l + j, h, width, token_dim, head_dim);
                    prompt[dst..dst + head_dim].copy_from_slice(&values[src..src + head_dim]);
                }
            }
        }
    }
    let json = serde_json::json!({
        "peft_type": "PREFIX_TUNING",
        "num_virtual_tokens": nvt,
        "num_layers": sites.len(),
        "token_dim": token_dim,
        "num_attention_heads": heads,
        "encoder_hidden_size": token_dim,
        "prefix_projection": false,
        "num_transformer_submodules": 1,
    });
    Ok((vec![TensorEntry::f32(PROMPT_EMBEDDINGS, vec![nvt, width], &prompt)], json))
}

/// A projected prefix's `tensors` (embeddings and the MLP at the model's prefix-projection site)
/// as peft saves one: the MLP's output as `prompt_embeddings [num_virtual_tokens,
/// layers·2·token_dim]`, already in peft's layout, with `prefix_projection: true`.
pub(crate) fn from_projected(tensors: &AdapterTensors, layers: &[TunedLayerInfo]) -> Result<(Vec<TensorEntry>, serde_json::Value)> {
    let site = layers.iter().find(|l| l.kind == LayerKind::PrefixProjection && tensors.contains_key(&l.path)).map(|l| l.path.clone()).ok_or_else(|| PeftError::MissingTensor("a projected prefix".into()))?;
    let params = &tensors[&site];
    let get = |p: &str| params.get(p).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{p}")));
    let embeddings = get("embeddings")?;
    let [nvt, heads, head_dim]: [usize; 3] = embeddings.shape.to_vec().try_into().map_err(|_| PeftError::MissingTensor(format!("{site}.embeddings")))?;
    let token_dim = heads * head_dim;
    let hidden = linear(&values_f32(embeddings), nvt, get("input.weight")?, get("input.bias")?, Activation::Tanh, &format!("{site}.input"))?;
    let projected = linear(&hidden, nvt, get("output.weight")?, get("output.bias")?, Activation::Identity, &format!("{site}.output"))?;
    let width = projected.len() / nvt.max(1);
    let layer_count = kv_sites(layers).len();
    if token_dim == 0 || width != layer_count * 2 * token_dim {
        return Err(PeftError::ShapeMismatch { name: format!("{site}.output.weight"), expected: vec![layer_count * 2 * token_dim], actual: vec![width] });
    }
    let json = serde_json::json!({
        "peft_type": "PREFIX_TUNING",
        "num_virtual_tokens": nvt,
        "num_layers": layer_count,
        "token_dim": token_dim,
        "num_attention_heads": heads,
        "encoder_hidden_size": get("input.weight")?.shape[1],
        "prefix_projection": true,
        "num_transformer_submodules": 1,
    });
    Ok((vec![TensorEntry::f32(PROMPT_EMBEDDINGS, vec![nvt, width], &projected)], json))
}
