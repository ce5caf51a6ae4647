//! `peft logits`: runs a reference architecture (by `config.json`'s `model_type`) on one
//! sequence, optionally with an HF peft adapter of any method it loads, and writes its output
//! (and, for a model with a classification head, its class logits).

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::PeftError;
use peft_core::checkpoint::{TensorEntry, write_atomic};
use peft_models::{HfModel, TokenBatch};

use crate::quantize::CliError;

type B = NdArray;

/// Parses `1,2,3`.
fn parse_tokens(text: &str) -> Result<Vec<i64>, CliError> {
    let tokens: Vec<i64> = text
        .split(',')
        .map(|t| t.trim().parse::<u32>().map(i64::from))
        .collect::<Result<_, _>>()
        .map_err(|_| CliError::Nothing(format!("--tokens must be comma-separated token ids, got `{text}`")))?;
    if tokens.is_empty() {
        return Err(CliError::Nothing("--tokens is empty".into()));
    }
    Ok(tokens)
}

/// The model's output for `tokens`, its class logits when it classifies, and what ran.
type Outputs = (Tensor<B, 3>, Option<Tensor<B, 2>>, String);

fn run(model_dir: &Path, adapter: Option<&Path>, tokens: &[i64]) -> Result<Outputs, CliError> {
    let device = Default::default();
    let (mut model, _) = HfModel::<B>::load(model_dir, &device)?;
    let mut what = String::from("base model");
    if let Some(dir) = adapter {
        let loaded = model.load_adapter_folder(dir, "default")?;
        what = format!("{} adapter on {} modules", loaded.method.config().peft_type(), loaded.modules.len());
    }
    let vocab = model.vocab_size();
    if let Some(bad) = tokens.iter().find(|t| **t as usize >= vocab) {
        return Err(CliError::Nothing(format!("token id {bad} is outside the vocabulary of {vocab}")));
    }
    let prefix = model.prefix_len();
    if let Some(max) = model.max_positions().filter(|m| tokens.len() + prefix > *m) {
        return Err(CliError::Nothing(format!("{} tokens (+{prefix} prefix) exceed the model's {max} positions", tokens.len())));
    }
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), &device);
    let classes = match model.num_labels() {
        Some(_) => Some(model.classify(&TokenBatch::single(input.clone(), 0))?),
        None => None,
    };
    Ok((model.forward(input), classes, what))
}

pub fn logits(model_dir: &Path, adapter: Option<&Path>, tokens: &str, out: &Path) -> Result<String, CliError> {
    let tokens = parse_tokens(tokens)?;
    let (output, classes, what) = run(model_dir, adapter, &tokens)?;
    let entry = |name: &str, data: TensorData| -> Result<TensorEntry, CliError> {
        let (shape, dtype) = (data.shape.to_vec(), data.dtype);
        let values = data.into_vec::<f32>().map_err(|_| PeftError::UnsupportedDtype { name: name.into(), dtype: format!("{dtype:?}"), expected: "F32" })?;
        if !values.iter().all(|v| v.is_finite()) {
            return Err(PeftError::NonFiniteResult(format!("the {name} of the {what} (look at the adapter's scaling and the weights; nothing was written)")).into());
        }
        Ok(TensorEntry::f32(name, shape, &values))
    };
    let mut entries = vec![entry("output", output.into_data())?];
    if let Some(classes) = classes {
        entries.push(entry("class_logits", classes.into_data())?);
    }
    write_atomic(out, &entries, None)?;
    let written: Vec<String> = entries.iter().map(|e| format!("`{}` {:?}", e.name, e.shape)).collect();
    Ok(format!("{what}: wrote {} to {}", written.join(" and "), out.display()))
}
