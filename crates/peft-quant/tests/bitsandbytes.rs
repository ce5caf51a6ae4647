//! Bit-exact parity with bitsandbytes 0.50.2 (CPU) on fixtures made by
//! tools/make_quant_fixtures.py.
use peft_core::checkpoint::{parse, to_f32};
use peft_quant::layout::quantized_names;
use peft_quant::{Absmax, QuantConfig, QuantType, Quantized4bit, double_quantize};
use safetensors::SafeTensors;

const FIXTURE: &[u8] = include_bytes!("fixtures/bnb_4bit.safetensors");

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    quant_type: String,
    blocksize: usize,
    double_quant: bool,
    shape: Vec<usize>,
}

fn cases() -> (SafeTensors<'static>, Vec<Case>) {
    let meta = peft_core::checkpoint::metadata(FIXTURE, "fixture").unwrap();
    let cases: Vec<Case> = serde_json::from_str(&meta["cases"]).unwrap();
    assert_eq!(cases.len(), 32);
    (parse(FIXTURE, "fixture").unwrap(), cases)
}

fn floats(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    to_f32(name, &st.tensor(name).unwrap()).unwrap()
}

fn config_of(case: &Case) -> QuantConfig {
    QuantConfig { quant_type: case.quant_type.parse().unwrap(), blocksize: case.blocksize, double_quant: case.double_quant }
}

fn quantize_like(st: &SafeTensors<'_>, case: &Case) -> Quantized4bit {
    Quantized4bit::quantize(&case.name, &floats(st, &format!("{}.input", case.name)), &case.shape, "float32", config_of(case)).unwrap()
}

/// Bit patterns, compared as a count so that a failure does not print thousands of values.
fn mismatches(a: &[f32], b: &[f32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count() + a.len().abs_diff(b.len())
}

#[test]
fn packed_codes_and_absmax_are_bit_exact() {
    let (st, cases) = cases();
    let mut offsets_off_by_one_ulp = 0;
    for case in &cases {
        let ours = quantize_like(&st, case);
        let theirs = Quantized4bit::read(&st, &format!("{}.weight", case.name)).unwrap();
        let differing = ours.packed.iter().zip(&theirs.packed).filter(|(a, b)| a != b).count();
        assert!(differing == 0 && ours.packed.len() == theirs.packed.len(), "{}: {differing} packed bytes differ", case.name);
        match (&ours.state.absmax, &theirs.state.absmax) {
            (Absmax::Plain(a), Absmax::Plain(b)) => {
                assert_eq!(mismatches(a, b), 0, "{}: absmax", case.name)
            }
            (Absmax::Double { offset: oa, .. }, theirs_double @ Absmax::Double { offset: ob, .. }) => {
                // torch's f32 mean depends on the CPU's summation order: within one ulp of ours.
                assert!(oa.to_bits().abs_diff(ob.to_bits()) <= 1, "{}: nested offset {oa} vs {ob}", case.name);
                if oa != ob {
                    offsets_off_by_one_ulp += 1;
                }
                // Given their offset, the 8-bit codes, nested absmax and map are theirs exactly.
                let plain = Quantized4bit::quantize(&case.name, &floats(&st, &format!("{}.input", case.name)), &case.shape, "float32", QuantConfig { double_quant: false, ..config_of(case) }).unwrap();
                assert_eq!(&double_quantize(&plain.absmax(), *ob), theirs_double, "{}: double quantization", case.name);
            }
            _ => panic!("{}: double quantization differs", case.name),
        }
        if !case.double_quant {
            assert_eq!(ours.state, theirs.state, "{}: state", case.name);
        }
    }
    assert!(offsets_off_by_one_ulp <= 2, "{offsets_off_by_one_ulp} offsets differ");
}

#[test]
fn dequantization_is_bit_exact_and_within_the_block_bound() {
    let (st, cases) = cases();
    for case in &cases {
        let theirs = Quantized4bit::read(&st, &format!("{}.weight", case.name)).unwrap();
        let want = floats(&st, &format!("{}.dequant", case.name));
        let got = theirs.dequantize();
        assert_eq!(mismatches(&got, &want), 0, "{}: dequantized values differ", case.name);
        // The error of each value is at most half the largest gap of the code, times its block's absmax.
        let input = floats(&st, &format!("{}.input", case.name));
        let absmax = theirs.absmax();
        let mut code = theirs.state.code;
        code.sort_by(f32::total_cmp);
        let gap = code.windows(2).map(|w| w[1] - w[0]).fold(0.0, f32::max);
        let true_absmax: Vec<f32> = input.chunks(case.blocksize).map(|b| b.iter().fold(0.0f32, |m, v| m.max(v.abs()))).collect();
        for (i, (x, y)) in input.iter().zip(&got).enumerate() {
            let b = i / case.blocksize;
            let bound = gap / 2.0 * true_absmax[b] + (absmax[b] - true_absmax[b]).abs() + 1e-6;
            assert!((x - y).abs() <= bound, "{} [{i}]: {x} vs {y}, bound {bound}", case.name);
        }
    }
}

#[test]
fn our_layout_is_theirs_tensor_for_tensor() {
    let (st, cases) = cases();
    for case in &cases {
        let name = format!("{}.weight", case.name);
        let ours = quantize_like(&st, case).to_entries(&name);
        for entry in &ours {
            let theirs = st.tensor(&entry.name).unwrap_or_else(|_| panic!("{}: we write `{}`, they do not", case.name, entry.name));
            assert_eq!(entry.dtype, theirs.dtype(), "{}", entry.name);
            assert_eq!(entry.shape, theirs.shape(), "{}", entry.name);
            if entry.name.contains("nested") || entry.name.ends_with(".absmax") && case.double_quant {
                continue; // depends on the offset, checked above
            }
            if entry.name.contains("quant_state") && case.double_quant {
                // The JSON differs only in the offset's digits when the offsets differ by one ulp.
                let ours: serde_json::Value = serde_json::from_slice(&entry.data).unwrap();
                let theirs: serde_json::Value = serde_json::from_slice(theirs.data()).unwrap();
                assert_eq!(ours["shape"], theirs["shape"]);
                continue;
            }
            assert!(entry.data == theirs.data(), "{}: bytes differ ({})", entry.name, String::from_utf8_lossy(&entry.data));
        }
        let expected_parts = if case.double_quant { 6 } else { 4 };
        assert_eq!(ours.len(), expected_parts);
    }
    assert_eq!(quantized_names(&st).len(), 32);
}

#[test]
fn bits_per_parameter() {
    assert!((QuantConfig::qlora().bits_per_parameter() - 4.127).abs() < 5e-4);
    let plain = QuantConfig { quant_type: QuantType::Nf4, blocksize: 64, double_quant: false };
    assert_eq!(plain.bits_per_parameter(), 4.5);
    let data: Vec<f32> = (0..64 * 256 * 4).map(|i| (i as f32).sin()).collect();
    let q = Quantized4bit::quantize("w", &data, &[256, 256], "float32", QuantConfig::qlora()).unwrap();
    assert!((q.bits_per_parameter() - 4.127).abs() < 5e-4, "{}", q.bits_per_parameter());
    let q = Quantized4bit::quantize("w", &data, &[256, 256], "float32", plain).unwrap();
    assert_eq!(q.bits_per_parameter(), 4.5);
}

#[test]
fn double_quantization_round_trips_the_scales() {
    let data: Vec<f32> = (0..64 * 600).map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0) * (1.0 + (i / 64) as f32 / 50.0)).collect();
    let plain = Quantized4bit::quantize("w", &data, &[600, 64], "float32", QuantConfig { double_quant: false, ..QuantConfig::qlora() }).unwrap();
    let double = Quantized4bit::quantize("w", &data, &[600, 64], "float32", QuantConfig::qlora()).unwrap();
    assert_eq!(plain.packed, double.packed, "double quantization only changes the scales");
    let (exact, approx) = (plain.absmax(), double.absmax());
    let nested = match &double.state.absmax {
        Absmax::Double { nested_absmax, .. } => nested_absmax.clone(),
        _ => unreachable!(),
    };
    let half_gap = peft_quant::DYNAMIC_MAP.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max) / 2.0;
    for (i, (a, b)) in exact.iter().zip(&approx).enumerate() {
        assert!((a - b).abs() <= half_gap * nested[i / 256] * 1.001 + 1e-6, "block {i}: {a} vs {b} (nested {}, half gap {half_gap})", nested[i / 256]);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    use peft_quant::QuantError;
    let cfg = |blocksize| QuantConfig { quant_type: QuantType::Nf4, blocksize, double_quant: false };
    assert!(matches!(Quantized4bit::quantize("w", &[1.0; 8], &[8], "float32", cfg(48)), Err(QuantError::InvalidBlocksize(48))));
    assert!(matches!(Quantized4bit::quantize("w", &[1.0, f32::NAN], &[2], "float32", cfg(64)), Err(QuantError::NonFinite(_))));
    assert!(matches!(Quantized4bit::quantize("w", &[1.0; 3], &[2, 2], "float32", cfg(64)), Err(QuantError::CorruptState { .. })));
    assert!(matches!("int3".parse::<QuantType>(), Err(QuantError::UnknownQuantType(_))));
    let (st, _) = cases();
    assert!(matches!(Quantized4bit::read(&st, "nope"), Err(QuantError::MissingTensor(_))));
}

#[test]
fn dequantizes_to_bf16_and_f16_by_rounding_the_f32_values() {
    let (st, _) = cases();
    let q = Quantized4bit::read(&st, "c0.weight").unwrap();
    let dense = q.dequantize();
    let bf16 = q.dequantize_to(safetensors::Dtype::BF16).unwrap();
    let f16 = q.dequantize_to(safetensors::Dtype::F16).unwrap();
    assert_eq!(bf16.len(), 2 * dense.len());
    for (i, v) in dense.iter().enumerate() {
        let b = u16::from_le_bytes([bf16[2 * i], bf16[2 * i + 1]]);
        let h = u16::from_le_bytes([f16[2 * i], f16[2 * i + 1]]);
        // Round to nearest even, by hand: the 16 high bits of the f32, rounded on the low 16.
        let bits = v.to_bits();
        let rounded = ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
        assert_eq!(b, rounded, "bf16 [{i}]");
        assert!((half_f16(h) - v).abs() <= v.abs() * 1e-3 + 1e-7, "f16 [{i}]");
    }
    assert!(q.dequantize_to(safetensors::Dtype::I32).is_err());
}

fn half_f16(bits: u16) -> f32 {
    // IEEE half to f32 for normal and subnormal values.
    let sign = if bits >> 15 == 1 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let frac = (bits & 0x3ff) as f32;
    sign * if exp == 0 { frac * 2f32.powi(-24) } else { (1.0 + frac / 1024.0) * 2f32.powi(exp - 15) }
}
