//! Prompt tuning and P-Tuning in HF peft's folder, both ways: `prompt_embeddings
//! [num_virtual_tokens, token_dim]`, the virtual tokens' input embeddings, at the model's one
//! prompt site. As peft does, P-Tuning is saved as its encoder's output (MLP or LSTM), and a
//! `P_TUNING` folder loads as those virtual tokens (peft's inference form; any encoder type).

use std::collections::BTreeMap;

use burn::tensor::TensorData;
use peft_core::checkpoint::TensorEntry;
use peft_core::{AdapterTensors, LayerKind, PeftError, Result, Targeting, TunedLayerInfo};
use peft_ptuning::PromptTuningConfig;

use crate::folder::{AdapterFolder, values_f32};
use crate::host_linear::{Activation, linear};
use crate::host_lstm::bidirectional;
use crate::keys::PROMPT_EMBEDDINGS;

const PART: &str = "embeddings";

/// The model's prompt site; a decoder has one.
fn prompt_site(layers: &[TunedLayerInfo]) -> Result<String> {
    let sites: Vec<&TunedLayerInfo> = layers.iter().filter(|l| l.kind == LayerKind::Prompt).collect();
    match sites.as_slice() {
        [one] => Ok(one.path.clone()),
        [] => Err(PeftError::NoWrappedLayer { method: "PROMPT_TUNING", site: peft_core::Site::Prompt.describe() }),
        _ => Err(PeftError::InvalidConfig(format!("the model has {} prompt sites; prompt tuning needs one", sites.len()))),
    }
}

/// Our config and values for the prompt in `folder`, on a model whose wrapped layers are `layers`.
pub(crate) fn to_ours(folder: &AdapterFolder, layers: &[TunedLayerInfo]) -> Result<(PromptTuningConfig, AdapterTensors)> {
    let hf = &folder.config;
    let prompt = folder.prompt.as_ref().ok_or_else(|| PeftError::MissingTensor(PROMPT_EMBEDDINGS.into()))?;
    let submodules = hf.extra.get("num_transformer_submodules").and_then(serde_json::Value::as_u64).unwrap_or(1);
    if submodules != 1 {
        return Err(PeftError::UnsupportedValue { key: "num_transformer_submodules".into(), value: submodules.to_string(), supported: "1 (decoders)".into() });
    }
    let site = prompt_site(layers)?;
    let nvt = hf.num_virtual_tokens.or(prompt.shape.first().copied()).unwrap_or(0);
    let token_dim = hf.extra_usize("token_dim").unwrap_or(prompt.shape.get(1).copied().unwrap_or(0));
    if prompt.shape != [nvt, token_dim] || nvt == 0 {
        return Err(PeftError::ShapeMismatch { name: format!("{PROMPT_EMBEDDINGS} (num_virtual_tokens {nvt}, token_dim {token_dim})"), expected: vec![nvt, token_dim], actual: prompt.shape.clone() });
    }
    let tensors = AdapterTensors::from([(site.clone(), BTreeMap::from([(PART.to_string(), TensorData::new(prompt.values.clone(), [nvt, token_dim]))]))]);
    Ok((PromptTuningConfig::new(Targeting::names(&[site])).with_num_virtual_tokens(nvt), tensors))
}

/// The prompt `tensors` as peft's `prompt_embeddings` (P-Tuning's: through its encoder), and its
/// config fields.
pub(crate) fn from_ours(tensors: &AdapterTensors, layers: &[TunedLayerInfo]) -> Result<(Vec<TensorEntry>, serde_json::Value)> {
    let site = prompt_site(layers)?;
    let params = tensors.get(&site).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{PART}")))?;
    let data = params.get(PART).ok_or_else(|| PeftError::MissingTensor(format!("{site}.{PART}")))?;
    let [nvt, token_dim]: [usize; 2] = data.shape.to_vec().try_into().map_err(|_| PeftError::MissingTensor(format!("{site}.{PART}")))?;
    let mut values = values_f32(data);
    let json = if params.contains_key("encoder.mlp_in.weight") {
        let (encoded, hidden, layers) = bidirectional(params, "encoder.layers", &values, nvt)?;
        values = encoded;
        for (layer, activation) in [("mlp_in", Activation::Relu), ("mlp_out", Activation::Identity)] {
            let get = |p: &str| params.get(&format!("encoder.{layer}.{p}")).ok_or_else(|| PeftError::MissingTensor(format!("{site}.encoder.{layer}.{p}")));
            values = linear(&values, nvt, get("weight")?, get("bias")?, activation, &format!("{site}.encoder.{layer}"))?;
        }
        if values.len() != nvt * token_dim {
            return Err(PeftError::ShapeMismatch { name: format!("{site}.encoder.mlp_out.weight"), expected: vec![2 * hidden, token_dim], actual: vec![2 * hidden, values.len() / nvt.max(1)] });
        }
        serde_json::json!({
            "peft_type": "P_TUNING",
            "encoder_reparameterization_type": "LSTM",
            "encoder_hidden_size": hidden,
            "encoder_num_layers": layers,
            "encoder_dropout": 0.0,
        })
    } else if params.contains_key("encoder.input.weight") {
        let mut hidden = 0;
        for (layer, activation) in [("input", Activation::Relu), ("hidden", Activation::Relu), ("output", Activation::Identity)] {
            let get = |p: &str| params.get(&format!("encoder.{layer}.{p}")).ok_or_else(|| PeftError::MissingTensor(format!("{site}.encoder.{layer}.{p}")));
            let (weight, bias) = (get("weight")?, get("bias")?);
            if layer == "input" {
                hidden = weight.shape.get(1).copied().unwrap_or(0);
            }
            values = linear(&values, nvt, weight, bias, activation, &format!("{site}.encoder.{layer}"))?;
        }
        if values.len() != nvt * token_dim {
            return Err(PeftError::ShapeMismatch { name: format!("{site}.encoder.output.weight"), expected: vec![hidden, token_dim], actual: vec![hidden, values.len() / nvt.max(1)] });
        }
        serde_json::json!({
            "peft_type": "P_TUNING",
            "encoder_reparameterization_type": "MLP",
            "encoder_hidden_size": hidden,
            "encoder_num_layers": 2,
            "encoder_dropout": 0.0,
        })
    } else {
        serde_json::json!({
            "peft_type": "PROMPT_TUNING",
            "prompt_tuning_init": "RANDOM",
            "prompt_tuning_init_text": null,
            "tokenizer_name_or_path": null,
        })
    };
    let mut json = json;
    let object = json.as_object_mut().expect("a JSON object");
    object.insert("num_virtual_tokens".into(), nvt.into());
    object.insert("token_dim".into(), token_dim.into());
    object.insert("num_transformer_submodules".into(), 1.into());
    Ok((vec![TensorEntry::f32(PROMPT_EMBEDDINGS, vec![nvt, token_dim], &values)], json))
}
