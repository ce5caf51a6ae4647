//! A checkpoint transformers saved in 4 bits (bitsandbytes' layout, NF4 with double
//! quantization: a QLoRA base) loads with its linear layers kept in 4 bits, and gives the logits
//! of the model with bitsandbytes' dequantized weights (fixture by `tools/make_4bit_fixtures.py`).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{PeftError, PeftModel};
use peft_models::HfModel;
use peft_quant::{BaseLinear, QuantConfig};

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn tokens() -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = serde_json::from_str(&std::fs::read_to_string(root().join("tokens.json")).unwrap()).unwrap();
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [1, n]), &Default::default())
}

fn quantized_layers(m: &HfModel<B>) -> usize {
    let HfModel::Llama(llama) = m else { panic!("a Llama") };
    llama.model.layers.iter().flat_map(|l| [&l.self_attn.q_proj.base, &l.self_attn.k_proj.base, &l.self_attn.v_proj.base, &l.self_attn.o_proj.base, &l.mlp.gate_proj.base, &l.mlp.up_proj.base, &l.mlp.down_proj.base]).filter(|b| matches!(b, BaseLinear::Quantized(_))).count()
}

#[test]
fn a_transformers_4bit_checkpoint_loads_in_4_bits_with_bitsandbytes_logits() {
    let dir = root().join("models/llama_4bit");
    let (m, report) = HfModel::<B>::load(&dir, &Default::default()).unwrap();
    assert_eq!(quantized_layers(&m), 14);
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    let bytes = read_bytes(&dir.join("expected.safetensors")).unwrap();
    let theirs = to_f32("logits", &parse(&bytes, "expected").unwrap().tensor("logits").unwrap()).unwrap();
    let ours = m.forward(tokens()).into_data().into_vec::<f32>().unwrap();
    let off = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    println!("4-bit checkpoint: logits within {off:.2e} of bitsandbytes' dequantized model");
    assert!(off < 1e-5, "{off}");
    // transformers quantized the same f32 weights as QLoRA's quantization here: the same 4-bit
    // codes; the double-quantized scales may differ by one step where torch's f32 mean of the
    // scales differs from ours in the last bit (peft_quant::mean).
    let mut dense = HfModel::<B>::load(&root().join("models/llama"), &Default::default()).unwrap().0;
    assert_eq!(dense.quantize(QuantConfig::qlora()).unwrap(), 14);
    let gap = (dense.forward(tokens()) - m.forward(tokens())).abs().max().into_scalar();
    assert!(gap < 1e-4, "{gap}");
    // Quantizing again leaves 4-bit layers alone; adapters go on top (QLoRA).
    let mut m = m;
    m.quantize(QuantConfig::qlora()).unwrap();
    peft_hf::load_adapter(&mut m, &root().join("adapters/llama_lora"), "lora").unwrap();
    let adapted = m.forward(tokens());
    m.set_active_adapters(&[]).unwrap();
    assert!((adapted - m.forward(tokens())).abs().max().into_scalar() > 1e-3);
}

#[test]
fn a_4bit_weight_of_the_wrong_shape_is_a_typed_error() {
    // The 4-bit q_proj renamed to k_proj (32 outputs where k_proj has 16).
    let dir = root().join("models/llama_4bit");
    let bytes = read_bytes(&dir.join("model.safetensors")).unwrap();
    let file = parse(&bytes, "4bit").unwrap();
    let swap = |n: &str| n.replace("layers.0.self_attn.q_proj", "@").replace("layers.0.self_attn.k_proj", "layers.0.self_attn.q_proj").replace('@', "layers.0.self_attn.k_proj");
    let entries: Vec<_> = file.names().into_iter().map(|n| peft_core::checkpoint::TensorEntry::from_view(&swap(n), &file.tensor(n).unwrap())).collect();
    let out = std::env::temp_dir().join(format!("peft-4bit-swap-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    peft_core::checkpoint::write_atomic(&out.join("model.safetensors"), &entries, None).unwrap();
    let err = HfModel::<B>::load(&out, &Default::default()).unwrap_err();
    assert!(matches!(err, PeftError::ShapeMismatch { .. }), "{err}");
    std::fs::remove_dir_all(&out).unwrap();
}
