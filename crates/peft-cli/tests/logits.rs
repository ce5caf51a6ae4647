//! `peft logits`, run as a user runs it, against transformers + peft outputs.
use std::path::{Path, PathBuf};
mod common;

use common::peft;

use peft_core::checkpoint::{parse, read_bytes, to_f32};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peft-models/tests/fixtures/hf")
}

fn tokens() -> String {
    let ids: Vec<u32> = serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokens.json")).unwrap()).unwrap();
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn out_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("peft-logits-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = read_bytes(path).unwrap();
    let st = parse(&bytes, "t").unwrap();
    let view = st.tensor(name).unwrap();
    (view.shape().to_vec(), to_f32(name, &view).unwrap())
}

fn check(model: &str, case: Option<&str>, which: &str) {
    let d = out_dir(&format!("{model}-{which}"));
    let out = d.join("out.safetensors");
    let model_dir = fixtures().join("models").join(model);
    let mut args = vec!["logits", "--model", model_dir.to_str().unwrap()];
    let adapter = case.map(|c| fixtures().join("adapters").join(c));
    if let Some(a) = &adapter {
        args.extend(["--adapter", a.to_str().unwrap()]);
    }
    let tokens = tokens();
    args.extend(["--tokens", &tokens, "--out", out.to_str().unwrap()]);
    let result = peft(&args);
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let (shape, ours) = tensor(&out, "output");
    let reference = fixtures().join("adapters").join(case.unwrap_or(match model {
        "llama" => "llama_lora",
        "gpt2_f16" => "gpt2_lora",
        _ => "bert_lora",
    }));
    let (expected_shape, theirs) = tensor(&reference.join("expected.safetensors"), which);
    assert_eq!(shape, expected_shape);
    let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "{model} {case:?}: differs by {diff}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn logits_match_transformers_and_peft() {
    check("llama", None, "base");
    check("gpt2_f16", None, "base");
    check("bert", None, "base");
    check("llama", Some("llama_lora"), "adapted");
    check("llama", Some("llama_ia3"), "adapted");
    check("llama", Some("llama_prefix"), "adapted");
    check("gpt2_f16", Some("gpt2_prefix"), "adapted");
    check("llama", Some("llama_prompt"), "adapted");
    check("gpt2_f16", Some("gpt2_prompt"), "adapted");
    check("bert", Some("bert_ia3"), "adapted");
}

/// AdapterHub folders through the command: `inspect` describes them, `logits --adapter` gives
/// AdapterHub's outputs, `merge` is a one-line refusal.
#[test]
fn adapterhub_folders_inspect_run_and_refuse_to_merge() {
    let d = out_dir("adapterhub");
    let bert = fixtures().join("models/bert");
    let tokens = tokens();
    for case in ["bert_seq_bn", "bert_par_bn"] {
        let adapter = fixtures().join("adapterhub").join(case);
        let a = adapter.to_str().unwrap();
        let shown = peft(&["inspect", a]);
        let text = String::from_utf8_lossy(&shown.stdout);
        assert!(shown.status.success() && text.contains("method: BOTTLENECK (AdapterHub folder") && text.contains("encoder.layer.1.output"), "{text}{}", String::from_utf8_lossy(&shown.stderr));
        let out = d.join(format!("{case}.safetensors"));
        let run = peft(&["logits", "--model", bert.to_str().unwrap(), "--adapter", a, "--tokens", &tokens, "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let (_, ours) = tensor(&out, "output");
        let (_, theirs) = tensor(&adapter.join("expected.safetensors"), "adapted");
        let diff = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{case}: differs from AdapterHub by {diff}");
        let merged = d.join("merged.safetensors");
        common::assert_fails(&peft(&["merge", "--base", bert.to_str().unwrap(), "--adapter", a, "--out", merged.to_str().unwrap()]), "cannot be merged", &merged);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_input_is_one_line_and_no_output() {
    let d = out_dir("bad");
    let out = d.join("out.safetensors");
    let o = out.to_str().unwrap();
    let llama = fixtures().join("models/llama");
    let l = llama.to_str().unwrap();
    common::assert_fails(&peft(&["logits", "--model", d.join("nope").to_str().unwrap(), "--tokens", "1,2", "--out", o]), "config.json", &out);
    common::assert_fails(&peft(&["logits", "--model", l, "--tokens", "1,x", "--out", o]), "--tokens", &out);
    common::assert_fails(&peft(&["logits", "--model", l, "--tokens", "1,64", "--out", o]), "outside the vocabulary", &out);
    let gpt2 = fixtures().join("models/gpt2_f16");
    let long = (0..40).map(|i| (i % 60).to_string()).collect::<Vec<_>>().join(",");
    common::assert_fails(&peft(&["logits", "--model", gpt2.to_str().unwrap(), "--tokens", &long, "--out", o]), "positions", &out);
    // Malformed JSON, unknown model_type, a tensor of the wrong shape.
    let broken = d.join("model");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(llama.join("model.safetensors"), broken.join("model.safetensors")).unwrap();
    let b = broken.to_str().unwrap();
    std::fs::write(broken.join("config.json"), "{\"model_type\": \"llama\", ").unwrap();
    common::assert_fails(&peft(&["logits", "--model", b, "--tokens", "1,2", "--out", o]), "malformed JSON", &out);
    std::fs::write(broken.join("config.json"), r#"{"model_type": "t5"}"#).unwrap();
    common::assert_fails(&peft(&["logits", "--model", b, "--tokens", "1,2", "--out", o]), "unknown model_type `t5`", &out);
    let config = std::fs::read_to_string(llama.join("config.json")).unwrap().replace("\"intermediate_size\": 48", "\"intermediate_size\": 40");
    std::fs::write(broken.join("config.json"), config).unwrap();
    common::assert_fails(&peft(&["logits", "--model", b, "--tokens", "1,2", "--out", o]), "gate_proj.weight", &out);
    // An adapter for another model.
    let adapter = fixtures().join("adapters/bert_lora");
    common::assert_fails(&peft(&["logits", "--model", l, "--adapter", adapter.to_str().unwrap(), "--tokens", "1,2", "--out", o]), "matches no adaptable module", &out);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Issue 12's classes: a Llama input past `max_position_embeddings`, an adapter whose scaling
/// makes the output non-finite, special files as inputs and outputs, the output over an input.
#[test]
fn hostile_inputs_are_one_line_errors() {
    let d = out_dir("hostile");
    let out = d.join("out.safetensors");
    let o = out.to_str().unwrap();
    let llama = fixtures().join("models/llama");
    let l = llama.to_str().unwrap();
    let long = (0..65).map(|i| (i % 60).to_string()).collect::<Vec<_>>().join(",");
    common::assert_fails(&peft(&["logits", "--model", l, "--tokens", &long, "--out", o]), "exceed the model's 64 positions", &out);

    let adapter = d.join("huge_alpha");
    std::fs::create_dir_all(&adapter).unwrap();
    let source = fixtures().join("adapters/llama_lora");
    std::fs::copy(source.join("adapter_model.safetensors"), adapter.join("adapter_model.safetensors")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(source.join("adapter_config.json")).unwrap()).unwrap();
    config["lora_alpha"] = 1e308.into();
    config["alpha_pattern"] = serde_json::json!({});
    std::fs::write(adapter.join("adapter_config.json"), config.to_string()).unwrap();
    let a = adapter.to_str().unwrap();
    common::assert_fails(&peft(&["logits", "--model", l, "--adapter", a, "--tokens", "1,2,3", "--out", o]), "came out NaN or infinite", &out);

    // The output over its own input is refused without --force; the input is untouched.
    let model_file = llama.join("model.safetensors");
    let before = std::fs::read(&model_file).unwrap();
    let m = model_file.to_str().unwrap();
    let refused = peft(&["logits", "--model", l, "--tokens", "1,2", "--out", m]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is the input"), "{}", String::from_utf8_lossy(&refused.stderr));
    assert_eq!(std::fs::read(&model_file).unwrap(), before);

    #[cfg(unix)]
    {
        let fifo = d.join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let q = d.join("q.safetensors");
        common::assert_fails(&peft(&["quantize", "--in", fifo.to_str().unwrap(), "--out", q.to_str().unwrap(), "--quant-type", "nf4"]), "is a FIFO, not a regular file", &q);
        common::assert_fails(&peft(&["dequantize", "--in", "/dev/zero", "--out", q.to_str().unwrap()]), "is a device, not a regular file", &q);
        let refused = peft(&["logits", "--model", l, "--tokens", "1,2", "--out", "/dev/null"]);
        assert_eq!(refused.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&refused.stderr).contains("is a device"), "{}", String::from_utf8_lossy(&refused.stderr));
        assert!(Path::new("/dev/null").exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}
