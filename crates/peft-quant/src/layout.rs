//! bitsandbytes' serialized 4-bit layout in safetensors, as transformers saves a `Linear4bit`.
//!
//! A weight named `P` is stored as `P` (packed `u8` `[ceil(n/2), 1]`), `P.absmax`,
//! `P.quant_map`, with double quantization `P.nested_absmax` and `P.nested_quant_map`, and
//! `P.quant_state.bitsandbytes__nf4` (or `__fp4`): a `u8` tensor holding the JSON
//! `{"quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"}`.

use peft_core::checkpoint::{TensorEntry, to_f32};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use crate::{Absmax, QuantError, QuantState, Quantized4bit, Result};

const STATE_KEY: &str = ".quant_state.bitsandbytes__";

#[derive(Serialize, Deserialize)]
struct StateJson {
    quant_type: String,
    blocksize: usize,
    dtype: String,
    shape: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nested_blocksize: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nested_dtype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nested_offset: Option<f32>,
}

/// The names `P` of every 4-bit weight in a file (those with a `P.quant_state...` tensor).
pub fn quantized_names(st: &SafeTensors<'_>) -> Vec<String> {
    let mut names: Vec<String> = st.names().into_iter().filter_map(|n| n.find(STATE_KEY).map(|i| n[..i].to_string())).collect();
    names.sort();
    names
}

/// The tensor names that belong to the 4-bit weight `name` (itself included).
pub fn part_names(name: &str) -> Vec<String> {
    let mut parts = vec![name.to_string()];
    parts.extend(["absmax", "quant_map", "nested_absmax", "nested_quant_map"].iter().map(|p| format!("{name}.{p}")));
    parts.extend(["nf4", "fp4"].iter().map(|t| format!("{name}{STATE_KEY}{t}")));
    parts
}

fn corrupt(name: &str, reason: impl Into<String>) -> QuantError {
    QuantError::CorruptState { name: name.into(), reason: reason.into() }
}

fn tensor<'a>(st: &'a SafeTensors<'_>, name: &str) -> Result<safetensors::tensor::TensorView<'a>> {
    st.tensor(name).map_err(|_| QuantError::MissingTensor(name.into()))
}

fn floats(st: &SafeTensors<'_>, name: &str) -> Result<Vec<f32>> {
    let view = tensor(st, name)?;
    to_f32(name, &view).map_err(|e| corrupt(name, e.to_string()))
}

fn bytes(st: &SafeTensors<'_>, name: &str) -> Result<Vec<u8>> {
    let view = tensor(st, name)?;
    if view.dtype() != Dtype::U8 {
        return Err(corrupt(name, format!("dtype {:?}, expected U8", view.dtype())));
    }
    Ok(view.data().to_vec())
}

impl Quantized4bit {
    /// Reads the 4-bit weight `name` from a file in bitsandbytes' layout.
    pub fn read(st: &SafeTensors<'_>, name: &str) -> Result<Self> {
        let (state_name, quant_type) = ["nf4", "fp4"]
            .iter()
            .map(|t| (format!("{name}{STATE_KEY}{t}"), *t))
            .find(|(n, _)| st.tensor(n).is_ok())
            .ok_or_else(|| QuantError::MissingTensor(format!("{name}{STATE_KEY}nf4")))?;
        let json = bytes(st, &state_name)?;
        let json: StateJson = serde_json::from_slice(&json).map_err(|e| corrupt(name, format!("quant state JSON: {e}")))?;
        if json.quant_type != quant_type {
            return Err(corrupt(name, format!("state says {} in a tensor named for {quant_type}", json.quant_type)));
        }
        let code: [f32; 16] = floats(st, &format!("{name}.quant_map"))?
            .try_into()
            .map_err(|v: Vec<f32>| corrupt(name, format!("quant_map has {} values, expected 16", v.len())))?;
        if let Some(nested) = json.nested_dtype.as_deref().filter(|d| !crate::state::FLOAT_DTYPES.contains(d)) {
            return Err(corrupt(name, format!("nested_dtype `{nested}` (expected float32, float16 or bfloat16)")));
        }
        let absmax = match (json.nested_offset, json.nested_blocksize) {
            (Some(offset), Some(nested_blocksize)) => Absmax::Double {
                codes: bytes(st, &format!("{name}.absmax"))?,
                nested_absmax: floats(st, &format!("{name}.nested_absmax"))?,
                nested_map: floats(st, &format!("{name}.nested_quant_map"))?,
                nested_blocksize,
                offset,
            },
            (None, None) => Absmax::Plain(floats(st, &format!("{name}.absmax"))?),
            _ => return Err(corrupt(name, "nested_offset and nested_blocksize must come together")),
        };
        let quantized = Self {
            packed: bytes(st, name)?,
            state: QuantState { quant_type: quant_type.parse()?, blocksize: json.blocksize, shape: json.shape, dtype: json.dtype, code, absmax },
        };
        quantized.validate(name)?;
        Ok(quantized)
    }

    /// The tensors that store this weight under `name`, in bitsandbytes' layout.
    pub fn to_entries(&self, name: &str) -> Vec<TensorEntry> {
        let s = &self.state;
        let mut entries = vec![
            TensorEntry::u8(name, vec![self.packed.len(), 1], self.packed.clone()),
            TensorEntry::f32(format!("{name}.quant_map"), vec![16], &s.code),
        ];
        let mut json = StateJson {
            quant_type: s.quant_type.name().into(),
            blocksize: s.blocksize,
            dtype: s.dtype.clone(),
            shape: s.shape.clone(),
            nested_blocksize: None,
            nested_dtype: None,
            nested_offset: None,
        };
        match &s.absmax {
            Absmax::Plain(v) => entries.push(TensorEntry::f32(format!("{name}.absmax"), vec![v.len()], v)),
            Absmax::Double { codes, nested_absmax, nested_map, nested_blocksize, offset } => {
                entries.push(TensorEntry::u8(format!("{name}.absmax"), vec![codes.len()], codes.clone()));
                entries.push(TensorEntry::f32(format!("{name}.nested_absmax"), vec![nested_absmax.len()], nested_absmax));
                entries.push(TensorEntry::f32(format!("{name}.nested_quant_map"), vec![nested_map.len()], nested_map));
                json.nested_blocksize = Some(*nested_blocksize);
                json.nested_dtype = Some("float32".into());
                json.nested_offset = Some(*offset);
            }
        }
        let json = python_json(&json).into_bytes();
        entries.push(TensorEntry::u8(format!("{name}{STATE_KEY}{}", s.quant_type.name()), vec![json.len()], json));
        entries
    }
}

/// The state JSON as Python's `json.dumps` writes it (bitsandbytes' `pack_dict_to_tensor`):
/// `", "` and `": "` separators, the offset as the `f64` of the stored `f32`.
fn python_json(state: &StateJson) -> String {
    let value = serde_json::to_value(state).expect("the quant state serializes");
    let serde_json::Value::Object(map) = value else { unreachable!("a struct serializes to an object") };
    let order = ["quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"];
    let fields: Vec<String> = order
        .iter()
        .filter_map(|k| map.get(*k).map(|v| (k, v)))
        .map(|(k, v)| {
            let text = match (k, v) {
                (&"shape", serde_json::Value::Array(dims)) => format!("[{}]", dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
                (&"nested_offset", _) => serde_json::to_string(&(state.nested_offset.unwrap_or_default() as f64)).expect("finite offset"),
                _ => v.to_string(),
            };
            format!("\"{k}\": {text}")
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}
