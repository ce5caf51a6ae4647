//! `peft train`, `peft eval` and `peft generate` on the training-workflow fixtures: the output
//! contract scripts rely on, resumption, agreement with transformers, and one-line errors.
use std::path::PathBuf;
mod common;

use common::{assert_fails, peft};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peft-train/tests/fixtures")
}

fn arg(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_writes_the_adapter_checkpoints_log_and_plot_and_resumes() {
    let out = std::env::temp_dir().join(format!("peft-cli-train-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (model, data) = (fixtures().join("llama"), fixtures().join("data/chat.jsonl"));
    let toml = out.with_extension("toml");
    std::fs::write(&toml, "lr = 0.02\ntarget = \"q_proj,v_proj\"\nsave_every = 2\n").unwrap();
    let common = ["train", "--model", arg(&model), "--data", arg(&data), "--out", arg(&out), "--config", arg(&toml), "--max-steps", "4", "--eval-split", "0.25"];
    let run = peft(&common);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("trained 4 steps") && stdout.contains("loss.svg"), "{stdout}");
    for file in ["adapter/adapter_config.json", "adapter/adapter_model.safetensors", "checkpoints/step-2/adapter/adapter_model.safetensors", "checkpoints/step-4/state.json", "log.jsonl", "loss.svg"] {
        assert!(out.join(file).exists(), "missing {file}");
    }
    assert!(std::fs::read_to_string(out.join("loss.svg")).unwrap().starts_with("<svg"));
    // The adapter is a peft folder that `peft eval` loads.
    let adapter = out.join("adapter");
    let eval = peft(&["eval", "--model", arg(&model), "--adapter", arg(&adapter), "--data", arg(&data), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!(json["loss"].as_f64().unwrap() > 0.0 && json["perplexity"].as_f64().is_some() && json["tokens"].as_u64() == Some(59), "{json}");
    // Resuming a finished run does no more steps and changes nothing; with other settings it is refused.
    let before = std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap();
    let mut resume = common.to_vec();
    resume.push("--resume");
    let again = peft(&resume);
    assert!(String::from_utf8_lossy(&again.stdout).contains("resumed from the checkpoint of step 4"), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(std::fs::read(out.join("adapter/adapter_model.safetensors")).unwrap(), before);
    let mut other = resume.clone();
    other.extend(["--lr", "0.5"]);
    assert_fails(&peft(&other), "other settings", &out.join("nothing"));
    assert!(out.join("checkpoints/step-4/state.json").exists(), "a refused resume damaged the checkpoint");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&toml).unwrap();
}

#[test]
fn prompt_tuning_trains_from_a_text_and_its_adapter_generates() {
    let out = std::env::temp_dir().join(format!("peft-cli-prompt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (model, data) = (fixtures().join("llama"), fixtures().join("data/chat.jsonl"));
    let run = peft(&["train", "--model", arg(&model), "--data", arg(&data), "--out", arg(&out), "--method", "prompt", "--num-virtual-tokens", "3", "--prompt-init-text", "Answer in one word", "--max-steps", "2", "--lr", "0.1"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("trainable params: 96 "), "{}", String::from_utf8_lossy(&run.stdout));
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["peft_type"].as_str(), config["num_virtual_tokens"].as_u64()), (Some("PROMPT_TUNING"), Some(3)));
    let adapter = out.join("adapter");
    let generated = peft(&["generate", "--model", arg(&model), "--adapter", arg(&adapter), "--prompt", "Hi", "--max-new-tokens", "3", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&generated.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&generated.stderr)));
    assert_eq!(json["tokens"].as_array().map(Vec::len), Some(3), "{json}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// Bottleneck adapters train on GPT-2 and are saved as an AdapterHub folder that `peft eval`,
/// `peft generate` and `peft inspect` take.
#[test]
fn bottleneck_adapters_train_and_save_in_adapterhub_layout() {
    let out = std::env::temp_dir().join(format!("peft-cli-adapter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (model, data) = (fixtures().join("gpt2"), fixtures().join("data/chat.jsonl"));
    let run = peft(&["train", "--model", arg(&model), "--data", arg(&data), "--out", arg(&out), "--method", "adapter", "--adapter-config", "houlsby", "--reduction-factor", "8", "--max-steps", "2", "--lr", "0.01"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let adapter = out.join("adapter");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap()).unwrap();
    let c = &config["config"];
    assert_eq!((c["mh_adapter"].as_bool(), c["output_adapter"].as_bool(), c["reduction_factor"].as_u64(), c["non_linearity"].as_str()), (Some(true), Some(true), Some(8), Some("swish")), "{config}");
    assert!(adapter.join("adapter.safetensors").exists());
    let eval = peft(&["eval", "--model", arg(&model), "--adapter", arg(&adapter), "--data", arg(&data), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&eval.stderr)));
    assert!(json["loss"].as_f64().is_some_and(f64::is_finite), "{json}");
    let generated = peft(&["generate", "--model", arg(&model), "--adapter", arg(&adapter), "--prompt", "Hi", "--max-new-tokens", "2", "--json"]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let shown = peft(&["inspect", arg(&adapter)]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("h.1.attention_adapters"), "{}", String::from_utf8_lossy(&shown.stdout));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn eval_and_greedy_generation_equal_transformers() {
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap();
    let (model, adapter) = (fixtures().join("llama"), fixtures().join("adapter"));
    let eval = peft(&["eval", "--model", arg(&model), "--adapter", arg(&adapter), "--data", arg(&fixtures().join("data/alpaca.jsonl")), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert!((json["loss"].as_f64().unwrap() - expected["eval"]["alpaca"]["adapter"]["loss"].as_f64().unwrap()).abs() < 1e-4, "{json}");
    let prompt = "Is this review positive or negative? A warm, funny film.";
    for (name, adapter) in [("llama", None), ("llama_adapter", Some(&adapter))] {
        let mut args = vec!["generate", "--model", arg(&model), "--prompt", prompt, "--max-new-tokens", "12", "--json"];
        if let Some(a) = adapter {
            args.extend(["--adapter", arg(a)]);
        }
        let run = peft(&args);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(json["tokens"], expected["generate"][name], "{name}");
        assert!(json["text"].is_string());
    }
}

#[test]
fn bad_training_input_is_one_line_and_leaves_no_output() {
    let dir = std::env::temp_dir().join(format!("peft-cli-train-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixtures().join("llama");
    let out = dir.join("run");
    let data = dir.join("data.jsonl");
    let train = |data: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["train", "--model", arg(&model), "--data", arg(data), "--out", arg(&out), "--max-steps", "1"];
        args.extend(extra);
        peft(&args)
    };
    std::fs::write(&data, "{\"text\": \"fine\"}\n{\"text\": \n").unwrap();
    assert_fails(&train(&data, &[]), "data.jsonl:2: malformed JSON", &out);
    std::fs::write(&data, "\n\n").unwrap();
    assert_fails(&train(&data, &[]), "no usable example", &out);
    std::fs::write(&data, "{\"text\": \"fine\"}\n").unwrap();
    assert_fails(&train(&data, &["--method", "loha"]), "unknown method `loha`", &out);
    assert_fails(&train(&data, &["--method", "adapter", "--adapter-config", "compacter"]), "unknown adapter_config `compacter`", &out);
    assert_fails(&train(&data, &["--reduction-factor", "4"]), "reduction_factor is for method adapter", &out);
    assert_fails(&train(&data, &["--target", "nope_proj"]), "matches no adaptable module", &out);
    assert_fails(&train(&data, &["--batch-size", "100000", "--max-len", "100000"]), "too large", &out);
    assert_fails(&train(&dir.join("missing.jsonl"), &[]), "missing.jsonl", &out);
    // A model without a chat template refuses chat data only when the ChatML fallback is off.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), bare.join(f)).unwrap();
    }
    std::fs::write(dir.join("off.toml"), "chatml_fallback = false\n").unwrap();
    let chat = fixtures().join("data/chat.jsonl");
    let mut args = vec!["train", "--model", arg(&bare), "--data", arg(&chat), "--out", arg(&out), "--max-steps", "1", "--config"];
    let off = dir.join("off.toml");
    args.push(arg(&off));
    assert_fails(&peft(&args), "no chat template", &out);
    assert_fails(&peft(&["generate", "--model", arg(&model), "--prompt", "hi", "--temperature", "-1"]), "temperature", &out);
    // Longer than GPT-2's 128 positions: refused before training, and in evaluation.
    let gpt2 = fixtures().join("gpt2");
    let long = dir.join("long.jsonl");
    std::fs::write(&long, format!("{{\"text\": \"{}\"}}\n", "the river rose in the night ".repeat(40))).unwrap();
    let args = ["train", "--model", arg(&gpt2), "--data", arg(&long), "--out", arg(&out), "--max-steps", "1", "--max-len", "1024", "--eval-split", "0"];
    assert_fails(&peft(&args), "do not fit the model's 128 positions", &out);
    assert_fails(&peft(&["eval", "--model", arg(&gpt2), "--data", arg(&long)]), "do not fit the model's 128 positions", &out);
    // Generation stops at the position limit instead of running past it.
    let generated = peft(&["generate", "--model", arg(&gpt2), "--prompt", "hi", "--max-new-tokens", "1000", "--json"]);
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let tokens = serde_json::from_slice::<serde_json::Value>(&generated.stdout).unwrap()["tokens"].as_array().unwrap().len();
    assert!(tokens < 128, "{tokens} tokens generated past 128 positions");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn qlora_on_a_checkpoint_saved_in_4_bits_equals_qlora_quantizing_on_load() {
    let out = std::env::temp_dir().join(format!("peft-cli-4bit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (model, data) = (fixtures().join("llama"), fixtures().join("data/chat.jsonl"));
    // The fixture's projections in bitsandbytes' layout, as transformers saves a 4-bit model.
    let four_bit = out.join("model-4bit");
    std::fs::create_dir_all(&four_bit).unwrap();
    for entry in std::fs::read_dir(&model).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&path, four_bit.join(path.file_name().unwrap())).unwrap();
        }
    }
    let quantize = peft(&["quantize", "--in", arg(&model.join("model.safetensors")), "--out", arg(&four_bit.join("model.safetensors")), "--quant-type", "nf4", "--double-quant", "--include", r"proj\.weight$"]);
    assert!(quantize.status.success(), "{}", String::from_utf8_lossy(&quantize.stderr));
    let train = |model: &std::path::Path, name: &str| {
        let run = peft(&["train", "--model", arg(model), "--data", arg(&data), "--out", arg(&out.join(name)), "--method", "qlora", "--target", "q_proj,v_proj", "--max-steps", "2"]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        (String::from_utf8_lossy(&run.stdout).to_string(), std::fs::read(out.join(name).join("adapter/adapter_model.safetensors")).unwrap())
    };
    let (dense_log, on_load) = train(&model, "on-load");
    let (saved_log, saved) = train(&four_bit, "saved");
    assert_eq!(on_load, saved, "the adapters differ");
    let params = |log: &str| log.lines().find(|l| l.starts_with("trainable params")).map(String::from);
    assert_eq!(params(&dense_log), params(&saved_log));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn seq_cls_trains_a_head_that_peft_eval_and_peft_logits_use() {
    let out = std::env::temp_dir().join(format!("peft-cli-seq-cls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (model, data) = (fixtures().join("llama"), fixtures().join("data/labels.csv"));
    let run = peft(&["train", "--model", arg(&model), "--data", arg(&data), "--out", arg(&out), "--task", "seq-cls", "--target", "q_proj,v_proj", "--lr", "0.02", "--max-steps", "6", "--batch-size", "3"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let adapter = out.join("adapter");
    let eval = peft(&["eval", "--model", arg(&model), "--adapter", arg(&adapter), "--data", arg(&data), "--json"]);
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let json: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    // Six texts, learned by heart.
    assert_eq!((json["tokens"].as_u64(), json["accuracy"].as_f64()), (Some(6), Some(1.0)), "{json}");
    let logits = out.join("logits.safetensors");
    let run = peft(&["logits", "--model", arg(&model), "--adapter", arg(&adapter), "--tokens", "5,9,12", "--out", arg(&logits)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("`class_logits` [1, 2]"), "{}", String::from_utf8_lossy(&run.stdout));
    // The wrong task for the data, and a method without a head in its format: one line each.
    let (x, y) = (out.join("x"), out.join("y"));
    assert_fails(&peft(&["train", "--model", arg(&model), "--data", arg(&data), "--out", arg(&x)]), "seq-cls", &x);
    assert_fails(&peft(&["train", "--model", arg(&model), "--data", arg(&data), "--out", arg(&y), "--task", "seq-cls", "--method", "adapter"]), "seq-cls", &y);
    assert_fails(&peft(&["eval", "--model", arg(&model), "--adapter", arg(&adapter), "--data", arg(&fixtures().join("data/chat.jsonl"))]), "text+label", &x);
    std::fs::remove_dir_all(&out).unwrap();
}
