//! Quant states that lie are refused when read: unknown dtypes, non-finite scales and offsets,
//! shapes whose product overflows.

use peft_core::checkpoint::{parse, serialize};
use peft_quant::{QuantConfig, QuantError, Quantized4bit};

/// The weight `w` quantized with double quantization, its state JSON edited by `edit`, read back.
fn read_edited(edit: impl Fn(&mut serde_json::Value)) -> Result<Quantized4bit, QuantError> {
    let values: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
    let q = Quantized4bit::quantize("w", &values, &[8, 64], "float32", QuantConfig::qlora()).unwrap();
    let mut entries = q.to_entries("w");
    let state = entries.iter_mut().find(|e| e.name.contains(".quant_state.")).unwrap();
    let mut json: serde_json::Value = serde_json::from_slice(&state.data).unwrap();
    edit(&mut json);
    state.data = json.to_string().into_bytes();
    state.shape = vec![state.data.len()];
    let bytes = serialize(&entries, None, "edited").unwrap();
    Quantized4bit::read(&parse(&bytes, "edited").unwrap(), "w")
}

#[test]
fn lying_states_are_corrupt_not_infinite_or_ignored() {
    assert!(read_edited(|_| {}).is_ok());
    let cases: [(&str, serde_json::Value); 5] = [
        ("nested_offset", 1e308.into()),
        ("nested_offset", serde_json::Value::Null),
        ("dtype", "float128".into()),
        ("nested_dtype", "int3".into()),
        ("shape", serde_json::json!([u64::MAX, 2])),
    ];
    for (key, value) in cases {
        let result = read_edited(|json| json[key] = value.clone());
        assert!(matches!(result, Err(QuantError::CorruptState { .. })), "{key} = {value}: {:?}", result.map(|_| ()));
    }
}
