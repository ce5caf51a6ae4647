//! The `peft quantize` / `peft dequantize` commands, run as a user runs them.
use std::path::{Path, PathBuf};
mod common;

use common::{assert_fails, peft};

use peft_core::checkpoint::{TensorEntry, from_f32, parse, read_bytes, to_f32, write_atomic};
use safetensors::tensor::Dtype;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0 - 0.5) * 4.0).collect()
}

fn input(d: &Path) -> PathBuf {
    let path = d.join("model.safetensors");
    let entries = vec![
        TensorEntry::f32("layers.0.q.weight", vec![48, 40], &values(48 * 40, 1)),
        TensorEntry { name: "layers.0.v.weight".into(), dtype: Dtype::BF16, shape: vec![40, 48], data: from_f32(&values(40 * 48, 2), Dtype::BF16).unwrap() },
        TensorEntry::f32("layers.0.q.bias", vec![40], &values(40, 3)),
        TensorEntry { name: "step".into(), dtype: Dtype::I64, shape: vec![1], data: 7i64.to_le_bytes().to_vec() },
    ];
    write_atomic(&path, &entries, None).unwrap();
    path
}


#[test]
fn quantize_then_dequantize_round_trips_names_shapes_and_values() {
    let d = dir("roundtrip");
    let src = input(&d);
    let q = d.join("q.safetensors");
    let out = peft(&["quantize", "--in", src.to_str().unwrap(), "--out", q.to_str().unwrap(), "--quant-type", "nf4", "--double-quant"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("quantized 2 tensors to nf4 (blocksize 64, double quantization, 4.127 bits per parameter)"));
    let bytes = read_bytes(&q).unwrap();
    let st = parse(&bytes, "q").unwrap();
    for part in ["", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".quant_state.bitsandbytes__nf4"] {
        assert!(st.tensor(&format!("layers.0.q.weight{part}")).is_ok(), "missing layers.0.q.weight{part}");
    }
    assert_eq!(st.tensor("layers.0.q.bias").unwrap().data(), parse(&read_bytes(&src).unwrap(), "src").unwrap().tensor("layers.0.q.bias").unwrap().data());
    assert_eq!(st.tensor("step").unwrap().dtype(), Dtype::I64);

    let dq = d.join("dq.safetensors");
    let out = peft(&["dequantize", "--in", q.to_str().unwrap(), "--out", dq.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dq_bytes = read_bytes(&dq).unwrap();
    let back = parse(&dq_bytes, "dq").unwrap();
    let src_bytes = read_bytes(&src).unwrap();
    let orig = parse(&src_bytes, "src").unwrap();
    let mut names: Vec<&str> = back.names();
    names.sort();
    assert_eq!(names, ["layers.0.q.bias", "layers.0.q.weight", "layers.0.v.weight", "step"]);
    for name in ["layers.0.q.weight", "layers.0.v.weight"] {
        let (a, b) = (back.tensor(name).unwrap(), orig.tensor(name).unwrap());
        assert_eq!((a.dtype(), a.shape()), (Dtype::F32, b.shape()));
        let (a, b) = (to_f32(name, &a).unwrap(), to_f32(name, &b).unwrap());
        for (block_a, block_b) in a.chunks(64).zip(b.chunks(64)) {
            let absmax = block_b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (x, y) in block_a.iter().zip(block_b) {
                // half the largest NF4 gap (1 - 0.6962 = 0.3038) plus the 8-bit scale error
                assert!((x - y).abs() <= absmax * (0.1519 + 0.01), "{name}: {x} vs {y}");
            }
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn include_selects_tensors_and_fp4_works() {
    let d = dir("include");
    let src = input(&d);
    let q = d.join("q.safetensors");
    let out = peft(&["quantize", "--in", src.to_str().unwrap(), "--out", q.to_str().unwrap(), "--quant-type", "fp4", "--blocksize", "128", "--include", r"\.v\."]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = read_bytes(&q).unwrap();
    let st = parse(&bytes, "q").unwrap();
    assert!(st.tensor("layers.0.v.weight.quant_state.bitsandbytes__fp4").is_ok());
    assert_eq!(st.tensor("layers.0.q.weight").unwrap().dtype(), Dtype::F32, "not included, so copied");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn dequantizes_files_written_by_bitsandbytes_bit_exactly() {
    let d = dir("bnb");
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../peft-quant/tests/fixtures/bnb_4bit.safetensors");
    let dq = d.join("dq.safetensors");
    let out = peft(&["dequantize", "--in", fixture, "--out", dq.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = read_bytes(&dq).unwrap();
    let st = parse(&bytes, "dq").unwrap();
    for i in 0..32 {
        let got = st.tensor(&format!("c{i}.weight")).unwrap();
        let want = st.tensor(&format!("c{i}.dequant")).unwrap();
        assert_eq!(got.shape(), want.shape());
        assert!(got.data() == want.data(), "c{i}: not bit-exact");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_input_is_one_line_non_zero_and_writes_nothing() {
    let d = dir("bad");
    let src = input(&d);
    let out_path = d.join("out.safetensors");
    let (s, o) = (src.to_str().unwrap(), out_path.to_str().unwrap());
    assert_fails(&peft(&["quantize", "--in", s, "--out", o, "--quant-type", "nf5"]), "unknown quant type `nf5`", &out_path);
    assert_fails(&peft(&["quantize", "--in", s, "--out", o, "--quant-type", "nf4", "--blocksize", "48"]), "invalid block size 48", &out_path);
    assert_fails(&peft(&["quantize", "--in", s, "--out", o, "--quant-type", "nf4", "--include", "("]), "invalid --include pattern", &out_path);
    assert_fails(&peft(&["quantize", "--in", s, "--out", o, "--quant-type", "nf4", "--include", "nothing"]), "nothing to quantize", &out_path);
    let missing = d.join("missing.safetensors");
    assert_fails(&peft(&["quantize", "--in", missing.to_str().unwrap(), "--out", o, "--quant-type", "nf4"]), "missing.safetensors", &out_path);

    let bytes = std::fs::read(&src).unwrap();
    let truncated = d.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    assert_fails(&peft(&["quantize", "--in", truncated.to_str().unwrap(), "--out", o, "--quant-type", "nf4"]), "malformed safetensors", &out_path);

    // A quantized file whose quant state JSON is corrupt.
    let q = d.join("q.safetensors");
    assert!(peft(&["quantize", "--in", s, "--out", q.to_str().unwrap(), "--quant-type", "nf4"]).status.success());
    let qbytes = read_bytes(&q).unwrap();
    let st = parse(&qbytes, "q").unwrap();
    let mut entries: Vec<TensorEntry> = st.names().into_iter().map(|n| TensorEntry::from_view(n, &st.tensor(n).unwrap())).collect();
    for e in entries.iter_mut().filter(|e| e.name.contains("quant_state")) {
        e.data = b"{\"quant_type\": \"nf4\", \"blocksize\": 64".to_vec();
        e.shape = vec![e.data.len()];
    }
    let corrupt = d.join("corrupt.safetensors");
    write_atomic(&corrupt, &entries, None).unwrap();
    assert_fails(&peft(&["dequantize", "--in", corrupt.to_str().unwrap(), "--out", o]), "corrupt quant state", &out_path);
    // A quant state whose shape disagrees with the packed bytes.
    for e in entries.iter_mut().filter(|e| e.name.contains("q.weight.quant_state")) {
        e.data = br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [48, 41]}"#.to_vec();
        e.shape = vec![e.data.len()];
    }
    write_atomic(&corrupt, &entries, None).unwrap();
    assert_fails(&peft(&["dequantize", "--in", corrupt.to_str().unwrap(), "--out", o]), "packed bytes", &out_path);
    assert_eq!(std::fs::read_dir(&d).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.')).count(), 0, "temporary files left");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_tensor_named_like_a_quantization_part_is_refused_not_a_panic() {
    let d = dir("collide");
    for part in ["absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state.bitsandbytes__nf4"] {
        let src = d.join(format!("{part}.safetensors"));
        let entries =
            vec![TensorEntry::f32("w", vec![8, 64], &values(8 * 64, 1)), TensorEntry::f32(format!("w.{part}"), vec![4], &values(4, 2))];
        write_atomic(&src, &entries, None).unwrap();
        let q = d.join("q.safetensors");
        let out = peft(&["quantize", "--in", src.to_str().unwrap(), "--out", q.to_str().unwrap(), "--quant-type", "nf4", "--double-quant"]);
        assert_fails(&out, &format!("tensor `w.{part}` is already in the input, and quantizing `w` writes"), &q);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_output_never_replaces_the_input_without_force() {
    let d = dir("force");
    let src = input(&d);
    let s = src.to_str().unwrap();
    let before = std::fs::read(&src).unwrap();
    let out = peft(&["quantize", "--in", s, "--out", s, "--quant-type", "nf4"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the input"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&src).unwrap(), before, "the input was touched");
    // Through another spelling of the same path.
    let other = format!("{}/./model.safetensors", d.display());
    assert_eq!(peft(&["quantize", "--in", s, "--out", &other, "--quant-type", "nf4"]).status.code(), Some(1));
    let out = peft(&["quantize", "--in", s, "--out", s, "--quant-type", "nf4", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&d).unwrap();
}
