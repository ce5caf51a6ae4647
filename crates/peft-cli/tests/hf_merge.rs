//! `peft merge` and `peft inspect` against HF peft 0.x on fixtures from tools/make_peft_fixtures.py.
use std::path::PathBuf;
mod common;

use common::peft;

use peft_core::checkpoint::{parse, read_bytes, to_f32};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peft")
}

#[test]
fn merge_matches_peft_merge_and_unload_on_every_case() {
    let out_dir = std::env::temp_dir().join(format!("peft-hf-merge-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut cases: Vec<(String, PathBuf, PathBuf, PathBuf)> = ["lora_patterns", "rslora_regex_layers", "dora", "all_linear", "layers_to_transform", "ia3", "gpt2_fan_in_fan_out"]
        .iter()
        .map(|c| (c.to_string(), fixtures().join(c).join("base"), fixtures().join(c).join("adapter"), fixtures().join(c).join("merged.safetensors")))
        .collect();
    // peft-models' f32 fixtures; llama_lora targets an embedding, so peft saved its base layer.
    let hf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peft-models/tests/fixtures/hf");
    for (case, model) in [("llama_lora", "llama"), ("llama_dora_layers", "llama"), ("llama_ia3", "llama"), ("bert_lora", "bert"), ("bert_ia3", "bert")] {
        let adapter = hf.join("adapters").join(case);
        cases.push((case.to_string(), hf.join("models").join(model), adapter.clone(), adapter.join("merged.safetensors")));
    }
    for (case, base_dir, adapter_dir, merged) in cases {
        let out = out_dir.join(format!("{case}.safetensors"));
        let run = peft(&["merge", "--base", base_dir.to_str().unwrap(), "--adapter", adapter_dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{case}: {}", String::from_utf8_lossy(&run.stderr));
        let (ours_b, theirs_b, base_b) = (read_bytes(&out).unwrap(), read_bytes(&merged).unwrap(), read_bytes(&base_dir.join("model.safetensors")).unwrap());
        let (ours, theirs, base) = (parse(&ours_b, "ours").unwrap(), parse(&theirs_b, "theirs").unwrap(), parse(&base_b, "base").unwrap());
        let mut names: Vec<&str> = ours.names();
        names.sort();
        let mut base_names: Vec<&str> = base.names();
        base_names.sort();
        assert_eq!(names, base_names, "{case}: tensor names differ from the base file");
        let mut changed = 0;
        for name in names {
            let (o, t, b) = (ours.tensor(name).unwrap(), theirs.tensor(name).unwrap(), base.tensor(name).unwrap());
            assert_eq!((o.dtype(), o.shape()), (b.dtype(), b.shape()), "{case}: {name}");
            let (ov, tv) = (to_f32(name, &o).unwrap(), to_f32(name, &t).unwrap());
            let scale = tv.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
            for (x, y) in ov.iter().zip(&tv) {
                assert!((x - y).abs() <= 1e-5 * scale, "{case}: {name}: {x} vs {y}");
            }
            changed += usize::from(o.data() != b.data());
        }
        assert!(changed > 0, "{case}: nothing merged");
    }
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn inspect_reports_method_ranks_modules_and_tensors() {
    let dir = fixtures().join("lora_patterns/adapter");
    let run = peft(&["inspect", dir.to_str().unwrap()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.starts_with("method: LORA\nranks: {2, 4}"), "{text}");
    assert!(text.contains("model.layers.1.mlp.down_proj"));
    let run = peft(&["inspect", dir.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["peft_type"], "LORA");
    assert_eq!(json["modules"].as_array().unwrap().len(), 6);
    let params: u64 = json["tensors"].as_array().unwrap().iter().map(|t| t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>()).sum();
    assert_eq!(json["parameters"].as_u64().unwrap(), params);
}

#[test]
fn bad_adapters_are_one_line_errors_without_output() {
    let dir = std::env::temp_dir().join(format!("peft-hf-bad-{}", std::process::id()));
    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let src = fixtures().join("lora_patterns/adapter");
    std::fs::copy(src.join("adapter_model.safetensors"), adapter.join("adapter_model.safetensors")).unwrap();
    std::fs::write(adapter.join("adapter_config.json"), "{\"peft_type\": \"LORA\", \"r\": ").unwrap();
    let out = dir.join("out.safetensors");
    let base = fixtures().join("lora_patterns/base");
    let run = peft(&["merge", "--base", base.to_str().unwrap(), "--adapter", adapter.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("malformed JSON"));
    // A rank that disagrees with the tensors.
    let text = std::fs::read_to_string(src.join("adapter_config.json")).unwrap().replace("\"r\": 4", "\"r\": 5");
    std::fs::write(adapter.join("adapter_config.json"), text).unwrap();
    let run = peft(&["merge", "--base", base.to_str().unwrap(), "--adapter", adapter.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("lora_A"), "{}", String::from_utf8_lossy(&run.stderr));
    // An adapter for a different model: the base weight is missing.
    std::fs::copy(src.join("adapter_config.json"), adapter.join("adapter_config.json")).unwrap();
    let gpt2 = fixtures().join("gpt2_fan_in_fan_out/base");
    let run = peft(&["merge", "--base", gpt2.to_str().unwrap(), "--adapter", adapter.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("missing tensor `model.layers.0.mlp.down_proj.weight`"), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 12, class 2: LoRA tensors of the wrong rank (0-D, 1-D, 3-D) for a targeted module are
/// one-line errors in `merge` and `logits`, never a panic, and the message gives the real shape.
#[test]
fn lora_tensors_of_the_wrong_rank_are_refused() {
    use peft_core::checkpoint::{TensorEntry, write_atomic};
    let dir = std::env::temp_dir().join(format!("peft-hf-rank-{}", std::process::id()));
    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let hf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peft-models/tests/fixtures/hf");
    let (src, model) = (hf.join("adapters/llama_lora"), hf.join("models/llama"));
    std::fs::copy(src.join("adapter_config.json"), adapter.join("adapter_config.json")).unwrap();
    let bytes = read_bytes(&src.join("adapter_model.safetensors")).unwrap();
    let st = parse(&bytes, "adapter").unwrap();
    let mut names: Vec<&str> = st.names();
    names.sort();
    let out = dir.join("out.safetensors");
    for victim in ["lora_A.weight", "lora_B.weight", "lora_embedding_A", "lora_embedding_B"] {
        let target = names.iter().find(|n| n.ends_with(victim)).expect("the fixture has it").to_string();
        for shape in [vec![], vec![4], vec![4, 2, 16]] {
            let entries: Vec<TensorEntry> = names
                .iter()
                .map(|&n| {
                    let view = st.tensor(n).unwrap();
                    if n == target {
                        let count = shape.iter().product::<usize>();
                        TensorEntry::f32(n, shape.clone(), &vec![0.5; count])
                    } else {
                        TensorEntry::from_view(n, &view)
                    }
                })
                .collect();
            write_atomic(&adapter.join("adapter_model.safetensors"), &entries, None).unwrap();
            let a = adapter.to_str().unwrap();
            for args in [
                vec!["merge", "--base", model.to_str().unwrap(), "--adapter", a, "--out", out.to_str().unwrap()],
                vec!["logits", "--model", model.to_str().unwrap(), "--adapter", a, "--tokens", "1,2", "--out", out.to_str().unwrap()],
            ] {
                let run = peft(&args);
                let stderr = String::from_utf8_lossy(&run.stderr);
                assert_eq!(run.status.code(), Some(1), "{target} {shape:?} {}: {stderr}", args[0]);
                assert!(!stderr.contains("internal error") && stderr.contains(&format!("{shape:?}")), "{target} {shape:?} {}: {stderr}", args[0]);
                assert!(!out.exists());
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
