//! Parity with AdapterHub (`adapters` 1.3) on the tiny BERT, Llama and GPT-2: Pfeiffer
//! (`seq_bn`), Houlsby (`double_seq_bn`, on BERT with layer 0 left out) and parallel (`par_bn`)
//! adapters saved by `model.save_adapter` (as `pytorch_adapter.bin` or `adapter.safetensors`),
//! made by `tools/make_adapterhub_fixtures.py`; our saved folders loading back.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_adapter::AdapterPlacement;
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{PeftError, PeftModel};
use peft_hf::{HfMethod, SaveOptions, load_adapter, save_adapter};
use peft_lora::Lora;
use peft_models::HfModel;

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn tokens() -> Tensor<B, 2, Int> {
    let ids = vec![3i64, 17, 5, 42, 8, 1, 60];
    Tensor::from_data(TensorData::new(ids, [1, 7]), &Default::default())
}

fn model(name: &str) -> HfModel<B, Lora<B>> {
    HfModel::load(&root().join("models").join(name), &Default::default()).unwrap().0
}

fn bert() -> HfModel<B, Lora<B>> {
    model("bert")
}

fn max_diff(ours: Tensor<B, 3>, case: &str, which: &str) -> f32 {
    let bytes = read_bytes(&root().join("adapterhub").join(case).join("expected.safetensors")).unwrap();
    let st = parse(&bytes, case).unwrap();
    let view = st.tensor(which).unwrap();
    assert_eq!(ours.dims().to_vec(), view.shape().to_vec());
    let want = to_f32(which, &view).unwrap();
    ours.into_data().into_vec::<f32>().unwrap().iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn check(case: &str, model_name: &str, placement: AdapterPlacement, modules: usize) {
    let mut m = model(model_name);
    let base = max_diff(m.forward(tokens()), case, "base");
    assert!(base < 1e-5, "{case}: base differs from transformers by {base}");
    let loaded = load_adapter(&mut m, &root().join("adapterhub").join(case), "hub").unwrap();
    let HfMethod::Bottleneck(config) = &loaded.method else { panic!("{case}: {:?}", loaded.method) };
    assert_eq!((config.placement, loaded.modules.len()), (placement, modules), "{case}: {:?}", loaded.modules);
    let adapted = max_diff(m.forward(tokens()), case, "adapted");
    assert!(adapted < 1e-4, "{case}: adapted output differs from AdapterHub by {adapted}");
    println!("{case}: base {base:.2e}, adapted {adapted:.2e} ({modules} sites)");

    // Disabled, the adapter gives the base back exactly.
    let mut off = m.clone();
    off.disable_adapters().unwrap();
    assert_eq!(off.forward(tokens()).into_data(), model(model_name).forward(tokens()).into_data());

    // Our folder (AdapterHub's layout, safetensors) loads back to the same outputs and tensors.
    let dir = std::env::temp_dir().join(format!("peft-adapterhub-{case}-{}", std::process::id()));
    save_adapter(&mut m, "hub", &loaded.method, &dir, &SaveOptions::default()).unwrap();
    let mut again = model(model_name);
    load_adapter(&mut again, &dir, "hub").unwrap();
    assert_eq!(again.adapter_tensors("hub").unwrap(), m.adapter_tensors("hub").unwrap());
    assert_eq!(again.forward(tokens()).into_data(), m.forward(tokens()).into_data());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pfeiffer_from_a_torch_file_matches_adapterhub() {
    check("bert_seq_bn", "bert", AdapterPlacement::AfterNorm, 2);
    check("llama_seq_bn", "llama", AdapterPlacement::AfterNorm, 2);
}

/// UniPELT's gate on a Pfeiffer adapter: `σ(gate(source))` averaged over the sequence.
#[test]
fn gated_adapters_match_adapterhub() {
    check("bert_seq_bn_gated", "bert", AdapterPlacement::AfterNorm, 2);
}

#[test]
fn houlsby_matches_adapterhub() {
    check("bert_double_seq_bn", "bert", AdapterPlacement::Sequential, 2);
    check("gpt2_double_seq_bn", "gpt2_f16", AdapterPlacement::Sequential, 4);
}

#[test]
fn parallel_from_safetensors_matches_adapterhub() {
    check("bert_par_bn", "bert", AdapterPlacement::Parallel, 2);
    check("llama_par_bn", "llama", AdapterPlacement::Parallel, 2);
}

#[test]
fn options_we_do_not_build_are_typed_errors_naming_them() {
    let src = root().join("adapterhub/bert_par_bn");
    let dir = std::env::temp_dir().join(format!("peft-adapterhub-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("adapter.safetensors"), dir.join("adapter.safetensors")).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("adapter_config.json")).unwrap()).unwrap();
    for (key, value) in [("ln_after", serde_json::json!(true)), ("scaling", serde_json::json!("learned")), ("non_linearity", serde_json::json!("tanh")), ("reduction_factor", serde_json::json!({"default": 4}))] {
        let mut c = config.clone();
        c["config"][key] = value;
        std::fs::write(dir.join("adapter_config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        let mut m = bert();
        let err = load_adapter(&mut m, &dir, "x").unwrap_err();
        assert!(matches!(&err, PeftError::UnsupportedValue { key: k, .. } if k.starts_with(key)), "{key}: {err}");
        assert!(m.adapter_names().is_empty(), "{key}: a refused folder changed the model");
    }
    // A gated config whose file has no gates.
    let mut c = config.clone();
    c["config"]["use_gating"] = serde_json::json!(true);
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    let err = load_adapter(&mut bert(), &dir, "x").unwrap_err();
    assert!(matches!(&err, PeftError::MissingTensor(t) if t.contains("gate")), "{err}");
    let mut c = config.clone();
    c["config"]["output_adapter"] = serde_json::json!(false);
    std::fs::write(dir.join("adapter_config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
    let err = load_adapter(&mut bert(), &dir, "x").unwrap_err();
    assert!(err.to_string().contains("output_adapter = false"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Our own adapters (each preset, up-projections made non-zero) saved in AdapterHub's layout.
/// With `PEFT_EXPORT_DIR`, each folder is kept there with `ours.safetensors` (our output for the
/// fixture tokens) for `tools/check_ours_in_adapterhub.py`.
#[test]
fn our_presets_save_in_adapterhub_layout() {
    use peft_adapter::BottleneckConfig;
    use peft_core::{TargetModules, Targeting};
    let export = std::env::var_os("PEFT_EXPORT_DIR").map(PathBuf::from);
    let targets = |names: &[&str]| Targeting::new(TargetModules::Regex(format!(r"encoder\.layer\.\d+\.({})\.layer_norm", names.join("|"))));
    let cases = [
        ("ours_pfeiffer", BottleneckConfig::pfeiffer(targets(&["output"])).with_reduction_factor(4)),
        ("ours_houlsby", BottleneckConfig::houlsby(targets(&["output", r"attention\.output"])).with_reduction_factor(8)),
        ("ours_parallel", BottleneckConfig::parallel(targets(&["output"]))),
    ];
    for (i, (case, config)) in cases.into_iter().enumerate() {
        let mut m = bert();
        let base = m.forward(tokens()).into_data();
        m.add_adapter("ours", &config).unwrap();
        assert_eq!(m.forward(tokens()).into_data(), base, "{case}: a fresh adapter changed the model");
        let mut tensors = m.adapter_tensors("ours").unwrap();
        for params in tensors.values_mut() {
            let up = params.get_mut("up.weight").unwrap();
            let n = up.num_elements();
            *up = TensorData::new((0..n).map(|j| ((j * 7 + i * 13) % 11) as f32 / 20.0 - 0.25).collect::<Vec<f32>>(), up.shape.clone());
        }
        m.set_adapter_tensors("ours", tensors).unwrap();
        let out = m.forward(tokens());
        let dir = match &export {
            Some(root) => root.join(case),
            None => std::env::temp_dir().join(format!("peft-{case}-{}", std::process::id())),
        };
        save_adapter(&mut m, "ours", &HfMethod::Bottleneck(config), &dir, &SaveOptions::default()).unwrap();
        let mut again = bert();
        load_adapter(&mut again, &dir, "ours").unwrap();
        assert_eq!(again.forward(tokens()).into_data(), out.clone().into_data(), "{case}");
        if export.is_some() {
            let values = out.into_data().into_vec::<f32>().unwrap();
            let entry = peft_core::checkpoint::TensorEntry::f32("output".to_string(), vec![1, 7, 32], &values);
            std::fs::write(dir.join("ours.safetensors"), peft_core::checkpoint::serialize(&[entry], None, case).unwrap()).unwrap();
            std::fs::write(dir.join("model_dir"), root().join("models/bert").display().to_string()).unwrap();
        } else {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
