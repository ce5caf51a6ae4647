//! One model carries LoRA and IA3 at once through `WeightAdapter` (HF peft's mixed model): it
//! loads either kind of peft folder with peft's outputs, and takes LoRA on attention and IA3 on
//! the MLP side by side.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{PeftModel, TargetModules, Targeting};
use peft_hf::{HfMethod, SaveOptions, load_adapter, save_adapter};
use peft_lora::{Ia3Config, LoraConfig};
use peft_models::HfModel;

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn llama() -> HfModel<B> {
    HfModel::load(&root().join("models/llama"), &Default::default()).unwrap().0
}

fn tokens() -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = serde_json::from_str(&std::fs::read_to_string(root().join("tokens.json")).unwrap()).unwrap();
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [1, n]), &Default::default())
}

fn values(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Largest difference between our output and peft's `adapted` output of `case`.
fn off_peft(m: &HfModel<B>, case: &str) -> f32 {
    let bytes = read_bytes(&root().join("adapters").join(case).join("expected.safetensors")).unwrap();
    let theirs = to_f32("adapted", &parse(&bytes, case).unwrap().tensor("adapted").unwrap()).unwrap();
    values(m.forward(tokens())).iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn a_lora_and_an_ia3_folder_load_into_one_model_and_each_matches_peft() {
    let mut m = llama();
    let base = values(m.forward(tokens()));
    load_adapter(&mut m, &root().join("adapters/llama_lora"), "lora").unwrap();
    load_adapter(&mut m, &root().join("adapters/llama_ia3"), "ia3").unwrap();
    m.set_active_adapters(&["lora"]).unwrap();
    let lora = off_peft(&m, "llama_lora");
    m.set_active_adapters(&["ia3"]).unwrap();
    let ia3 = off_peft(&m, "llama_ia3");
    println!("mixed model: LoRA {lora:.2e}, IA3 {ia3:.2e} from peft");
    assert!(lora < 1e-4 && ia3 < 1e-4, "LoRA {lora}, IA3 {ia3}");
    // Both at once, merged and unmerged alike; disabled is the base model bit for bit.
    m.set_active_adapters(&["lora", "ia3"]).unwrap();
    let both = values(m.forward(tokens()));
    let mut merged = m.clone();
    merged.merge_adapters(true).unwrap();
    let drift = values(merged.forward(tokens())).iter().zip(&both).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(drift < 1e-4, "merged LoRA + IA3 differ from unmerged by {drift}");
    m.disable_adapters().unwrap();
    assert_eq!(values(m.forward(tokens())), base);
}

#[test]
fn lora_on_attention_and_ia3_on_the_mlp_at_once_save_and_load_back() {
    let mut m = llama();
    let lora = LoraConfig::new(Targeting::names(&["q_proj", "v_proj"])).with_r(2).with_alpha(4.0);
    let ia3 = Ia3Config::new(Targeting::names(&["up_proj", "down_proj"])).with_feedforward_modules(TargetModules::names(&["down_proj"]));
    m.add_adapter("attn", &lora).unwrap();
    m.add_adapter("mlp", &ia3).unwrap();
    m.set_active_adapters(&["attn", "mlp"]).unwrap();
    let layers = m.tuned_layers();
    let on = |suffix: &str| layers.iter().find(|l| l.path.ends_with(suffix)).unwrap().adapters.clone();
    assert_eq!(on("layers.0.self_attn.q_proj"), ["attn"]);
    assert_eq!(on("layers.0.mlp.up_proj"), ["mlp"]);
    // Non-trivial values in both, so that each one shows in the output.
    let base = values(m.forward(tokens()));
    for name in ["attn", "mlp"] {
        let mut tensors = m.adapter_tensors(name).unwrap();
        for data in tensors.values_mut().flat_map(|p| p.values_mut()) {
            let n = data.num_elements();
            *data = TensorData::new((0..n).map(|i| 1.0 + ((i * 7919 % 101) as f32 / 101.0 - 0.5) * 0.3).collect::<Vec<f32>>(), data.shape.clone());
        }
        m.set_adapter_tensors(name, tensors).unwrap();
    }
    let mixed = values(m.forward(tokens()));
    assert_ne!(mixed, base);
    let dir = std::env::temp_dir().join(format!("peft-mixed-{}", std::process::id()));
    let mut fresh = llama();
    for (name, method) in [("attn", HfMethod::Lora(lora)), ("mlp", HfMethod::Ia3(ia3))] {
        save_adapter(&mut m, name, &method, &dir.join(name), &SaveOptions::default()).unwrap();
        load_adapter(&mut fresh, &dir.join(name), name).unwrap();
    }
    fresh.set_active_adapters(&["attn", "mlp"]).unwrap();
    assert_eq!(values(fresh.forward(tokens())), mixed);
    std::fs::remove_dir_all(&dir).unwrap();
}
