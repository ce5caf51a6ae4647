//! Parity with transformers + peft on tiny random checkpoints made by
//! `tools/make_model_fixtures.py`: base outputs, adapted outputs (LoRA, rsLoRA, DoRA, IA3,
//! prefix tuning, embeddings, fan_in_fan_out, f16/bf16 checkpoints), merged weights, and our
//! saved adapters loading back.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{PeftError, PeftModel};
use peft_hf::{HfCheckpoint, HfMethod, SaveOptions, load_adapter, save_adapter};
use peft_lora::{Ia3, Lora};
use peft_models::{HfModel, LinearAdapter};

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn tokens() -> Tensor<B, 2, Int> {
    let text = std::fs::read_to_string(root().join("tokens.json")).unwrap();
    let ids: Vec<i64> = serde_json::from_str(&text).unwrap();
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [1, n]), &Default::default())
}

fn expected(case: &str, which: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = read_bytes(&root().join("adapters").join(case).join("expected.safetensors")).unwrap();
    let st = parse(&bytes, case).unwrap();
    let view = st.tensor(which).unwrap();
    (view.shape().to_vec(), to_f32(which, &view).unwrap())
}

fn max_diff(ours: Tensor<B, 3>, (shape, values): (Vec<usize>, Vec<f32>)) -> f32 {
    assert_eq!(ours.dims().to_vec(), shape);
    let ours = ours.into_data().into_vec::<f32>().unwrap();
    ours.iter().zip(&values).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn model<T: LinearAdapter<B>>(name: &str) -> HfModel<B, T> {
    HfModel::load(&root().join("models").join(name), &Default::default()).unwrap().0
}

/// Loads the case's adapter and checks base and adapted outputs; returns the adapted model.
fn check_case<T: LinearAdapter<B>>(case: &str, model_name: &str) -> HfModel<B, T> {
    let mut m = model::<T>(model_name);
    let base = max_diff(m.forward(tokens()), expected(case, "base"));
    assert!(base < 1e-4, "{case}: base output differs from transformers by {base}");
    let loaded = load_adapter(&mut m, &root().join("adapters").join(case), "hf").unwrap();
    assert!(!loaded.modules.is_empty());
    let adapted = max_diff(m.forward(tokens()), expected(case, "adapted"));
    assert!(adapted < 1e-4, "{case}: adapted output differs from peft by {adapted}");
    println!("{case}: base {base:.2e}, adapted {adapted:.2e} ({} modules)", loaded.modules.len());
    // Disabling the adapter gives the base model back exactly.
    let mut off = m.clone();
    off.disable_adapters().unwrap();
    assert_eq!(off.forward(tokens()).into_data(), model::<T>(model_name).forward(tokens()).into_data());
    m
}

fn check_merged<T: LinearAdapter<B>>(case: &str, mut m: HfModel<B, T>) {
    let before = m.forward(tokens());
    m.merge_adapters(true).unwrap();
    let after = m.forward(tokens());
    let bytes = read_bytes(&root().join("adapters").join(case).join("merged.safetensors")).unwrap();
    let st = parse(&bytes, case).unwrap();
    let mut worst = 0.0f32;
    for entry in m.hf_tensors(&|_| true) {
        let view = st.tensor(&entry.name).unwrap_or_else(|_| panic!("{case}: peft's merged state has no `{}`", entry.name));
        assert_eq!(view.shape(), entry.shape.as_slice(), "{}", entry.name);
        let theirs = to_f32(&entry.name, &view).unwrap();
        let ours: Vec<f32> = entry.data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
    }
    assert!(worst < 1e-5, "{case}: merged weights differ from peft's merge_and_unload by {worst}");
    let drift = (before - after).abs().max().into_scalar();
    assert!(drift < 1e-4, "{case}: merged forward differs from unmerged by {drift}");
    println!("{case}: merged weights within {worst:.2e} of peft");
}

#[test]
fn llama_lora_with_patterns_and_embedding_matches_peft() {
    let m = check_case::<Lora<B>>("llama_lora", "llama");
    check_merged("llama_lora", m);
}

#[test]
fn llama_rslora_all_linear_matches_peft() {
    check_case::<Lora<B>>("llama_rslora_all_linear", "llama");
}

#[test]
fn llama_dora_on_one_layer_matches_peft() {
    let m = check_case::<Lora<B>>("llama_dora_layers", "llama");
    check_merged("llama_dora_layers", m);
}

#[test]
fn llama_ia3_matches_peft() {
    let m = check_case::<Ia3<B>>("llama_ia3", "llama");
    check_merged("llama_ia3", m);
}

#[test]
fn prefix_tuning_matches_peft_on_llama_gpt2_and_bert() {
    check_case::<Lora<B>>("llama_prefix", "llama");
    check_case::<Lora<B>>("gpt2_prefix", "gpt2_f16");
    check_case::<Lora<B>>("bert_prefix", "bert");
    check_case::<Lora<B>>("llama_prefix_projection", "llama");
    check_case::<Lora<B>>("bert_prefix_projection", "bert");
}

#[test]
fn prompt_tuning_and_p_tuning_match_peft() {
    check_case::<Lora<B>>("llama_prompt", "llama");
    check_case::<Lora<B>>("gpt2_prompt", "gpt2_f16");
    check_case::<Lora<B>>("llama_ptuning", "llama");
    check_case::<Lora<B>>("llama_ptuning_lstm", "llama");
    check_case::<Lora<B>>("bert_prompt", "bert");
}

#[test]
fn tied_bf16_llama_lora_matches_peft() {
    let m = check_case::<Lora<B>>("llama_tied_lora", "llama_tied_bf16");
    check_merged("llama_tied_lora", m);
}

#[test]
fn gpt2_f16_fan_in_fan_out_lora_matches_peft() {
    let m = check_case::<Lora<B>>("gpt2_lora", "gpt2_f16");
    check_merged("gpt2_lora", m);
}

#[test]
fn bert_lora_and_ia3_match_peft() {
    let m = check_case::<Lora<B>>("bert_lora", "bert");
    check_merged("bert_lora", m);
    let m = check_case::<Ia3<B>>("bert_ia3", "bert");
    check_merged("bert_ia3", m);
}

/// Saves what was loaded, loads it back into a fresh model, and compares outputs. With
/// `PEFT_EXPORT_DIR` set, also leaves the folders and our outputs there for
/// `tools/check_ours_in_peft.py`.
fn round_trip<T: LinearAdapter<B>>(case: &str, model_name: &str, task: &str) {
    let mut m = model::<T>(model_name);
    let loaded = load_adapter(&mut m, &root().join("adapters").join(case), "hf").unwrap();
    save_reload_export(&mut m, "hf", &loaded.method, case, model_name, &SaveOptions { task_type: Some(task), ..Default::default() });
}

/// Saves adapter `name`, loads the folder into a fresh model and asserts identical outputs. With
/// `PEFT_EXPORT_DIR` set, keeps the folder there with our output (`ours.safetensors`) and the base
/// model's path (`model_dir`) for `tools/check_ours_in_peft.py`; otherwise removes it.
fn save_reload_export<T: LinearAdapter<B>>(m: &mut HfModel<B, T>, name: &str, method: &HfMethod, case: &str, model_name: &str, options: &SaveOptions<'_>) {
    let export = std::env::var("PEFT_EXPORT_DIR").ok();
    let dir = match &export {
        Some(d) => PathBuf::from(d).join(case),
        None => std::env::temp_dir().join(format!("peft-save-{case}-{}", std::process::id())),
    };
    save_adapter(m, name, method, &dir, options).unwrap();
    let mut again = model::<T>(model_name);
    load_adapter(&mut again, &dir, "x").unwrap();
    let ours = m.forward(tokens());
    // P-Tuning and a projected prefix are saved as their MLP's output, computed on the host: the
    // same values, not the same bits.
    let reparameterized = matches!(method, HfMethod::Prompt(c) if c.encoder.is_some()) || matches!(method, HfMethod::PrefixProjection(_));
    if reparameterized {
        let diff = (again.forward(tokens()) - ours.clone()).abs().max().into_scalar();
        assert!(diff < 1e-5, "{case}: {diff}");
    } else {
        assert_eq!(again.forward(tokens()).into_data(), ours.clone().into_data(), "{case}");
    }
    if export.is_some() {
        let data = ours.into_data();
        let entry = peft_core::checkpoint::TensorEntry::f32("output", data.shape.to_vec(), &data.into_vec::<f32>().unwrap());
        peft_core::checkpoint::write_atomic(&dir.join("ours.safetensors"), &[entry], None).unwrap();
        std::fs::write(dir.join("model_dir"), root().join("models").join(model_name).display().to_string()).unwrap();
    } else {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn saved_adapters_load_back_identically() {
    round_trip::<Lora<B>>("llama_lora", "llama", "CAUSAL_LM");
    round_trip::<Lora<B>>("llama_rslora_all_linear", "llama", "CAUSAL_LM");
    round_trip::<Lora<B>>("llama_dora_layers", "llama", "CAUSAL_LM");
    round_trip::<Ia3<B>>("llama_ia3", "llama", "CAUSAL_LM");
    round_trip::<Lora<B>>("llama_prefix", "llama", "CAUSAL_LM");
    round_trip::<Lora<B>>("gpt2_lora", "gpt2_f16", "CAUSAL_LM");
    round_trip::<Lora<B>>("gpt2_prefix", "gpt2_f16", "CAUSAL_LM");
    round_trip::<Lora<B>>("llama_prompt", "llama", "CAUSAL_LM");
    round_trip::<Lora<B>>("gpt2_prompt", "gpt2_f16", "CAUSAL_LM");
    round_trip::<Lora<B>>("llama_ptuning", "llama", "CAUSAL_LM");
    round_trip::<Lora<B>>("bert_lora", "bert", "FEATURE_EXTRACTION");
    round_trip::<Lora<B>>("bert_prefix", "bert", "FEATURE_EXTRACTION");
    round_trip::<Lora<B>>("bert_prompt", "bert", "FEATURE_EXTRACTION");
}

#[test]
fn bad_adapters_are_typed_errors_and_leave_the_model_alone() {
    let dir = std::env::temp_dir().join(format!("peft-bad-adapter-{}", std::process::id()));
    let src = root().join("adapters/llama_lora");
    let copy = |files: &[&str]| {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    };
    let mut m = model::<Lora<B>>("llama");
    let reference = m.forward(tokens()).into_data();
    // Missing file.
    copy(&["adapter_config.json"]);
    assert!(matches!(load_adapter(&mut m, &dir, "a"), Err(PeftError::Io { .. })));
    // Unsupported peft_type.
    copy(&["adapter_model.safetensors"]);
    std::fs::write(dir.join("adapter_config.json"), r#"{"peft_type": "LOHA", "r": 4}"#).unwrap();
    assert!(matches!(load_adapter(&mut m, &dir, "a"), Err(PeftError::UnsupportedValue { .. })));
    // Malformed JSON.
    std::fs::write(dir.join("adapter_config.json"), r#"{"peft_type": "LORA", "r": "#).unwrap();
    assert!(matches!(load_adapter(&mut m, &dir, "a"), Err(PeftError::Json { .. })));
    // Rank disagreeing with the tensors: the error names the tensor.
    let config = std::fs::read_to_string(src.join("adapter_config.json")).unwrap().replace("\"r\": 4", "\"r\": 3");
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    match load_adapter(&mut m, &dir, "a") {
        Err(PeftError::ShapeMismatch { name, .. }) => assert!(name.ends_with("lora_A.weight") || name.ends_with("lora_embedding_A"), "{name}"),
        other => panic!("expected a shape error, got {other:?}"),
    }
    // A missing B factor.
    copy(&["adapter_config.json"]);
    let bytes = read_bytes(&src.join("adapter_model.safetensors")).unwrap();
    let st = parse(&bytes, "a").unwrap();
    let kept: Vec<_> = st
        .names()
        .into_iter()
        .filter(|n| !n.ends_with("layers.1.self_attn.q_proj.lora_B.weight"))
        .map(|n| peft_core::checkpoint::TensorEntry::from_view(n, &st.tensor(n).unwrap()))
        .collect();
    peft_core::checkpoint::write_atomic(&dir.join("adapter_model.safetensors"), &kept, None).unwrap();
    match load_adapter(&mut m, &dir, "a") {
        Err(PeftError::MissingTensor(name)) => assert_eq!(name, "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"),
        other => panic!("expected a missing tensor, got {other:?}"),
    }
    // A module the model does not have.
    let renamed: Vec<_> = st
        .names()
        .into_iter()
        .map(|n| peft_core::checkpoint::TensorEntry::from_view(&n.replace("q_proj", "qq_proj"), &st.tensor(n).unwrap()))
        .collect();
    peft_core::checkpoint::write_atomic(&dir.join("adapter_model.safetensors"), &renamed, None).unwrap();
    assert!(matches!(load_adapter(&mut m, &dir, "a"), Err(PeftError::NoTargetMatch { .. })));
    // Truncated file.
    std::fs::write(dir.join("adapter_model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(load_adapter(&mut m, &dir, "a"), Err(PeftError::Safetensors { .. })));
    assert!(m.adapter_names().is_empty());
    assert_eq!(m.forward(tokens()).into_data(), reference);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn checkpoints_with_missing_or_misshapen_tensors_are_typed_errors() {
    let dir = std::env::temp_dir().join(format!("peft-bad-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = root().join("models/llama");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let bytes = read_bytes(&src.join("model.safetensors")).unwrap();
    let st = parse(&bytes, "m").unwrap();
    let write = |skip: &str, reshape: Option<&str>| {
        let entries: Vec<_> = st
            .names()
            .into_iter()
            .filter(|n| *n != skip)
            .map(|n| {
                let mut e = peft_core::checkpoint::TensorEntry::from_view(n, &st.tensor(n).unwrap());
                if Some(n) == reshape {
                    e.shape.reverse();
                }
                e
            })
            .collect();
        peft_core::checkpoint::write_atomic(&dir.join("model.safetensors"), &entries, None).unwrap();
    };
    write("model.norm.weight", None);
    assert!(matches!(HfModel::<B, Lora<B>>::load(&dir, &Default::default()), Err(PeftError::MissingTensor(n)) if n == "model.norm.weight"));
    write("", Some("model.layers.0.mlp.up_proj.weight"));
    assert!(matches!(HfModel::<B, Lora<B>>::load(&dir, &Default::default()), Err(PeftError::ShapeMismatch { name, .. }) if name == "model.layers.0.mlp.up_proj.weight"));
    std::fs::write(dir.join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    assert!(matches!(HfModel::<B, Lora<B>>::load(&dir, &Default::default()), Err(PeftError::UnsupportedValue { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An adapter made here (not loaded from peft) with non-zero factors, saved for peft. With
/// `PEFT_EXPORT_DIR` set, `tools/check_ours_in_peft.py` checks it in peft.
#[test]
fn fresh_lora_prefix_and_prompt_save_for_peft() {
    use peft_core::Targeting;
    use peft_lora::LoraConfig;
    use peft_ptuning::{PrefixConfig, PrefixProjectionConfig, PromptEncoderConfig, PromptTuningConfig};
    let cases: Vec<(&str, HfMethod)> = vec![
        ("fresh_rslora_dora", HfMethod::Lora(LoraConfig::new(Targeting::names(&["q_proj", "v_proj", "up_proj"])).with_r(4).with_alpha(8.0).with_use_rslora(true).with_use_dora(true))),
        ("fresh_prefix", HfMethod::Prefix(PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(4))),
        ("fresh_prefix_projection", HfMethod::PrefixProjection(PrefixProjectionConfig::new(Targeting::names(&["prefix_projection"])).with_num_virtual_tokens(3).with_encoder_hidden_size(Some(16)))),
        ("fresh_prompt", HfMethod::Prompt(PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(3))),
        ("fresh_ptuning", HfMethod::Prompt(PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(3).with_encoder(Some(PromptEncoderConfig::new().with_hidden_size(Some(16)))))),
    ];
    for (case, method) in cases {
        let mut m = model::<Lora<B>>("llama");
        m.add_adapter("mine", method.config()).unwrap();
        // Non-zero B (peft's default init leaves it zero, which would test nothing).
        let mut tensors = m.adapter_tensors("mine").unwrap();
        for params in tensors.values_mut() {
            for (name, data) in params.iter_mut() {
                if name == "b" || name == "keys" {
                    let n = data.num_elements();
                    let values: Vec<f32> = (0..n).map(|i| ((i * 7919 % 101) as f32 / 101.0 - 0.5) * 0.3).collect();
                    *data = TensorData::new(values, data.shape.clone());
                }
            }
        }
        m.set_adapter_tensors("mine", tensors).unwrap();
        // The LoRA case also trains the output head in full (peft's modules_to_save).
        let heads: &[&str] = if case == "fresh_rslora_dora" { &["lm_head"] } else { &[] };
        if !heads.is_empty() {
            let peft_models::HfModel::Llama(llama) = &mut m else { unreachable!() };
            let peft_quant::BaseLinear::Dense(head) = &mut llama.lm_head.as_mut().unwrap().base else { unreachable!() };
            head.weight = peft_core::frozen_like(&head.weight, head.weight.val().mul_scalar(1.5));
        }
        save_reload_export(&mut m, "mine", &method, case, "llama", &SaveOptions { task_type: Some("CAUSAL_LM"), modules_to_save: heads });
    }
}

/// peft has no gates: a gated LoRA or prefix (UniPELT's) is refused in peft's format, and
/// nothing is written.
#[test]
fn gated_methods_are_not_saved_in_peft_format() {
    use peft_core::Targeting;
    use peft_lora::LoraConfig;
    use peft_ptuning::PrefixConfig;
    for method in [HfMethod::Lora(LoraConfig::new(Targeting::names(&["q_proj"])).with_gating(true)), HfMethod::Prefix(PrefixConfig::new(Targeting::names(&["kv"])).with_gating(true))] {
        let mut m = model::<Lora<B>>("llama");
        m.add_adapter("gated", method.config()).unwrap();
        let dir = std::env::temp_dir().join(format!("peft-gated-{}", std::process::id()));
        let saved = save_adapter(&mut m, "gated", &method, &dir, &SaveOptions::default());
        assert!(matches!(&saved, Err(PeftError::UnsupportedValue { key, .. }) if key.starts_with("gating")), "{saved:?}");
        assert!(!dir.exists());
    }
}

/// A padded batch gives each sequence's unpadded output (HF's attention_mask semantics).
#[test]
fn bert_padded_batch_equals_single_sequences() {
    let mut with_prompt = model::<Lora<B>>("bert");
    let prompt = peft_ptuning::PromptTuningConfig::new(peft_core::Targeting::names(&["prompt"])).with_num_virtual_tokens(3).with_init_std(0.5);
    with_prompt.add_adapter("prompt", &prompt).unwrap();
    for m in [model::<Lora<B>>("bert"), with_prompt] {
        padded_equals_single(&m);
    }
}

fn padded_equals_single(m: &HfModel<B, Lora<B>>) {
    let device = Default::default();
    let a = [3i64, 17, 5, 42, 8, 1, 60];
    let b = [9i64, 4, 33];
    let single = |ids: &[i64]| m.forward(Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device));
    let mut ids = a.to_vec();
    ids.extend(b);
    ids.extend([0, 0, 0, 0]);
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 7]), &device);
    let mask: Vec<f32> = (0..14).map(|i| if i < 7 || i < 10 { 1.0 } else { 0.0 }).collect();
    let padding = Tensor::<B, 2>::from_data(TensorData::new(mask, [2, 7]), &device);
    let peft_models::HfModel::Bert(bert) = m else { unreachable!() };
    let out = bert.forward_padded(tokens, Some(padding));
    let first = out.clone().narrow(0, 0, 1);
    let second = out.narrow(0, 1, 1).narrow(1, 0, 3);
    assert!((first - single(&a)).abs().max().into_scalar() < 1e-5);
    assert!((second - single(&b)).abs().max().into_scalar() < 1e-5);
}
