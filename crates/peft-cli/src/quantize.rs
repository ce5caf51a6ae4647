//! `peft quantize` and `peft dequantize`.

use std::collections::BTreeSet;
use std::path::Path;

use peft_core::PeftError;
use peft_core::checkpoint::{TensorEntry, dtype_name, is_float, metadata, parse, read_bytes, to_f32, write_atomic};
use peft_quant::layout::{part_names, quantized_names};
use peft_quant::{QuantConfig, QuantError, QuantType, Quantized4bit};
use regex::Regex;

/// Errors of the quantization commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Checkpoint I/O.
    #[error(transparent)]
    Peft(#[from] PeftError),
    /// Quantization.
    #[error(transparent)]
    Quant(#[from] QuantError),
    /// A bad `--include` pattern.
    #[error("invalid --include pattern: {0}")]
    Pattern(#[from] regex::Error),
    /// Nothing to do.
    #[error("{0}")]
    Nothing(String),
}

pub fn quantize(input: &Path, out: &Path, quant_type: &str, blocksize: usize, double_quant: bool, include: Option<&str>) -> Result<String, CliError> {
    let quant_type: QuantType = quant_type.parse()?;
    peft_quant::blockwise::check_blocksize(blocksize)?;
    let include = include.map(Regex::new).transpose()?;
    let path = input.display().to_string();
    let bytes = read_bytes(input)?;
    let st = parse(&bytes, &path)?;
    let config = QuantConfig { quant_type, blocksize, double_quant };
    let mut entries = Vec::new();
    let mut quantized = 0;
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let mut selected = BTreeSet::new();
    for name in &names {
        let view = st.tensor(name).map_err(|e| PeftError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        if view.shape().len() == 2 && is_float(view.dtype()) && include.as_ref().is_none_or(|r| r.is_match(name)) {
            selected.insert(name.as_str());
        }
    }
    for weight in &selected {
        let written = part_names(weight).into_iter().skip(1);
        if let Some(existing) = written.into_iter().find(|n| names.contains(n)) {
            return Err(QuantError::NameCollision { weight: weight.to_string(), existing }.into());
        }
    }
    for name in &names {
        let view = st.tensor(name).map_err(|e| PeftError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        if selected.contains(name.as_str()) {
            let values = to_f32(name, &view)?;
            let q = Quantized4bit::quantize(name, &values, view.shape(), &dtype_name(view.dtype()), config)?;
            entries.extend(q.to_entries(name));
            quantized += 1;
        } else {
            entries.push(TensorEntry::from_view(name, &view));
        }
    }
    if quantized == 0 {
        return Err(CliError::Nothing(format!("no 2-D floating tensor in `{path}` matches; nothing to quantize")));
    }
    write_atomic(out, &entries, Some(metadata(&bytes, &path)?))?;
    Ok(format!(
        "quantized {quantized} tensors to {} (blocksize {blocksize}{}, {:.3} bits per parameter) into {}",
        quant_type.name(),
        if double_quant { ", double quantization" } else { "" },
        config.bits_per_parameter(),
        out.display()
    ))
}

pub fn dequantize(input: &Path, out: &Path) -> Result<String, CliError> {
    let path = input.display().to_string();
    let bytes = read_bytes(input)?;
    let st = parse(&bytes, &path)?;
    let quantized = quantized_names(&st);
    if quantized.is_empty() {
        return Err(CliError::Nothing(format!("`{path}` holds no 4-bit weight")));
    }
    let parts: BTreeSet<String> = quantized.iter().flat_map(|n| part_names(n)).collect();
    let mut entries = Vec::new();
    for name in &quantized {
        let q = Quantized4bit::read(&st, name)?;
        let values = q.dequantize();
        if !values.iter().all(|v| v.is_finite()) {
            return Err(PeftError::NonFiniteResult(format!("dequantized `{name}` (its scales are corrupt; nothing was written)")).into());
        }
        entries.push(TensorEntry::f32(name.clone(), q.state.shape.clone(), &values));
    }
    let mut names: Vec<String> = st.names().into_iter().filter(|n| !parts.contains(*n)).map(String::from).collect();
    names.sort();
    for name in names {
        let view = st.tensor(&name).map_err(|e| PeftError::Safetensors { path: path.clone(), reason: e.to_string() })?;
        entries.push(TensorEntry::from_view(&name, &view));
    }
    write_atomic(out, &entries, Some(metadata(&bytes, &path)?))?;
    Ok(format!("dequantized {} tensors into {}", quantized.len(), out.display()))
}
