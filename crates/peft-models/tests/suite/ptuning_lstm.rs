//! P-Tuning with peft's LSTM encoder (`encoder_reparameterization_type = "LSTM"`) against
//! transformers + peft, on the fixture `llama_ptuning_lstm` of `tools/make_model_fixtures.py`:
//! the encoder's own weights (saved beside the folder, since peft saves only the encoder's
//! output) give the same virtual tokens and the same logits, and our save writes peft's folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{AdapterTensors, PeftModel, Targeting};
use peft_hf::{HfMethod, SaveOptions, load_adapter, save_adapter};
use peft_models::HfModel;
use peft_ptuning::{PromptEncoderConfig, PromptEncoderKind, PromptTuningConfig};

type B = NdArray;

fn case() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/adapters/llama_ptuning_lstm")
}

fn read(file: &str) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = read_bytes(&case().join(file)).unwrap();
    let st = parse(&bytes, file).unwrap();
    st.names().into_iter().map(|n| {
        let view = st.tensor(n).unwrap();
        (n.to_string(), (view.shape().to_vec(), to_f32(n, &view).unwrap()))
    }).collect()
}

/// `[rows, cols]` row-major, rows `from..to`, transposed to Burn's `[cols, to - from]`.
fn rows_transposed(values: &[f32], cols: usize, from: usize, to: usize) -> TensorData {
    let out: Vec<f32> = (0..cols).flat_map(|c| (from..to).map(move |r| values[r * cols + c])).collect();
    TensorData::new(out, [cols, to - from])
}

/// The torch encoder's state dict as our adapter's tensors: each LSTM's stacked gates (input,
/// forget, cell, output) split into Burn's gate controllers, linear weights transposed.
fn ours_from_torch(torch: &BTreeMap<String, (Vec<usize>, Vec<f32>)>, h: usize) -> BTreeMap<String, TensorData> {
    let mut out = BTreeMap::from([("embeddings".to_string(), TensorData::new(torch["embedding.weight"].1.clone(), torch["embedding.weight"].0.clone()))]);
    for layer in 0..2 {
        for (dir, suffix) in [("forward", ""), ("reverse", "_reverse")] {
            let (w_ih, w_hh) = (&torch[&format!("lstm_head.weight_ih_l{layer}{suffix}")], &torch[&format!("lstm_head.weight_hh_l{layer}{suffix}")]);
            let (b_ih, b_hh) = (&torch[&format!("lstm_head.bias_ih_l{layer}{suffix}")].1, &torch[&format!("lstm_head.bias_hh_l{layer}{suffix}")].1);
            for (g, gate) in ["input_gate", "forget_gate", "cell_gate", "output_gate"].iter().enumerate() {
                let at = |p: &str| format!("encoder.layers.{layer}.{dir}.{gate}.{p}");
                out.insert(at("input_transform.weight"), rows_transposed(&w_ih.1, w_ih.0[1], g * h, (g + 1) * h));
                out.insert(at("input_transform.bias"), TensorData::new(b_ih[g * h..(g + 1) * h].to_vec(), [h]));
                out.insert(at("hidden_transform.weight"), rows_transposed(&w_hh.1, h, g * h, (g + 1) * h));
                out.insert(at("hidden_transform.bias"), TensorData::new(b_hh[g * h..(g + 1) * h].to_vec(), [h]));
            }
        }
    }
    for (ours, theirs) in [("mlp_in", "mlp_head.0"), ("mlp_out", "mlp_head.2")] {
        let w = &torch[&format!("{theirs}.weight")];
        out.insert(format!("encoder.{ours}.weight"), rows_transposed(&w.1, w.0[1], 0, w.0[0]));
        out.insert(format!("encoder.{ours}.bias"), TensorData::new(torch[&format!("{theirs}.bias")].1.clone(), [w.0[0]]));
    }
    out
}

fn tokens() -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(vec![3i64, 17, 5, 42, 8, 1, 60], [1, 7]), &Default::default())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn an_lstm_prompt_encoder_matches_peft_and_saves_as_peft_does() {
    let torch = read("encoder.safetensors");
    let expected = read("expected.safetensors");
    let device = Default::default();
    let base = HfModel::<B>::load(&case().join("../../models/llama"), &device).unwrap().0;
    let mut m = base.clone();
    let encoder = PromptEncoderConfig::new().with_hidden_size(Some(8)).with_kind(PromptEncoderKind::Lstm);
    let config = PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(3).with_encoder(Some(encoder));
    m.add_adapter("p", &config).unwrap();
    let mut ours = m.adapter_tensors("p").unwrap();
    let site = ours.keys().next().unwrap().clone();
    let mapped = ours_from_torch(&torch, 8);
    let names: Vec<&String> = ours[&site].keys().collect();
    assert_eq!(names, mapped.keys().collect::<Vec<_>>(), "our parameter names");
    ours.insert(site.clone(), mapped);
    m.set_adapter_tensors("p", AdapterTensors::from(ours)).unwrap();

    // The logits of the tokens after the virtual ones, as peft computes them.
    let logits = m.forward(tokens()).into_data().into_vec::<f32>().unwrap();
    let diff = max_diff(&logits, &expected["adapted"].1);
    assert!(diff < 1e-4, "logits differ from peft by {diff}");

    // Saved as peft saves P-Tuning: the encoder's output as prompt_embeddings.
    let dir = std::env::temp_dir().join(format!("peft-ptuning-lstm-{}", std::process::id()));
    save_adapter(&mut m, "p", &HfMethod::Prompt(config), &dir, &SaveOptions { task_type: Some("CAUSAL_LM"), ..Default::default() }).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((json["peft_type"].as_str(), json["encoder_reparameterization_type"].as_str(), json["encoder_hidden_size"].as_u64(), json["encoder_num_layers"].as_u64()), (Some("P_TUNING"), Some("LSTM"), Some(8), Some(2)));
    let bytes = read_bytes(&dir.join("adapter_model.safetensors")).unwrap();
    let saved = parse(&bytes, "saved").unwrap();
    let prompt = to_f32("prompt_embeddings", &saved.tensor("prompt_embeddings").unwrap()).unwrap();
    let host = max_diff(&prompt, &torch["virtual_tokens"].1);
    assert!(host < 1e-5, "saved virtual tokens differ from peft's encoder by {host}");
    let mut again = base.clone();
    load_adapter(&mut again, &dir, "p").unwrap();
    let reloaded = again.forward(tokens()).into_data().into_vec::<f32>().unwrap();
    assert!(max_diff(&reloaded, &logits) < 1e-5);
    // peft's own folder loads to the same logits.
    let mut theirs = base;
    load_adapter(&mut theirs, &case(), "p").unwrap();
    assert!(max_diff(&theirs.forward(tokens()).into_data().into_vec::<f32>().unwrap(), &expected["adapted"].1) < 1e-4);
    std::fs::remove_dir_all(&dir).unwrap();
    println!("P-Tuning LSTM: logits {diff:.1e} from peft, saved virtual tokens {host:.1e} from peft's encoder");
}
