//! `peft logits`: runs a reference architecture (by `config.json`'s `model_type`) on one
//! sequence, optionally with an HF peft adapter of any method it loads, and writes its output.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::PeftError;
use peft_core::checkpoint::{TensorEntry, write_atomic};
use peft_hf::load_adapter;
use peft_models::HfModel;

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

fn run(model_dir: &Path, adapter: Option<&Path>, tokens: &[i64]) -> Result<(Tensor<B, 3>, String), CliError> {
    let device = Default::default();
    let (mut model, _) = HfModel::<B>::load(model_dir, &device)?;
    let mut what = String::from("base model");
    if let Some(dir) = adapter {
        let loaded = load_adapter(&mut model, dir, "default")?;
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
    Ok((model.forward(input), what))
}

pub fn logits(model_dir: &Path, adapter: Option<&Path>, tokens: &str, out: &Path) -> Result<String, CliError> {
    let tokens = parse_tokens(tokens)?;
    let (output, what) = run(model_dir, adapter, &tokens)?;
    let data = output.into_data();
    let (shape, dtype) = (data.shape.to_vec(), data.dtype);
    let values = data.into_vec::<f32>().map_err(|_| PeftError::UnsupportedDtype { name: "output".into(), dtype: format!("{dtype:?}"), expected: "F32" })?;
    if !values.iter().all(|v| v.is_finite()) {
        return Err(PeftError::NonFiniteResult(format!("the output of the {what} (look at the adapter's scaling and the weights; nothing was written)")).into());
    }
    write_atomic(out, &[TensorEntry::f32("output", shape.clone(), &values)], None)?;
    Ok(format!("{what}: wrote `output` {shape:?} to {}", out.display()))
}
