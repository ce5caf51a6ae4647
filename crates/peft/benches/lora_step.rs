//! Training-step and forward-pass cost of LoRA against full fine-tuning and the bare base, on the
//! same small transformer, measured in one run. Ratios are printed at the end.
//!
//! ```text
//! cargo bench -p peft --bench lora_step
//! ```
//!
//! Shape (the CPU anchor of docs/benchmarks.md): hidden 256, 4 layers, 4 heads, feed-forward
//! 1024, sequence 128, batch 8, vocabulary 1000; LoRA r = 8 on q and v.

use std::time::Duration;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use std::hint::black_box;

use criterion::Criterion;
use peft_toy::{TinyTransformer, TinyTransformerConfig};
use peft::prelude::*;

type Train = Autodiff<NdArray>;

const BATCH: usize = 8;
const SEQ: usize = 128;
const VOCAB: usize = 1000;

fn model<B: burn::tensor::backend::Backend>(device: &B::Device) -> TinyTransformer<B> {
    TinyTransformerConfig::new(VOCAB, SEQ, 2).with_d_model(256).with_n_layers(4).with_n_heads(4).with_d_ff(1024).init(device).no_grad()
}

fn inputs<B: burn::tensor::backend::Backend>(device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>) {
    let tokens = Tensor::<B, 2>::random([BATCH, SEQ], Distribution::Uniform(0.0, VOCAB as f64), device).int();
    let labels = Tensor::<B, 1>::random([BATCH], Distribution::Uniform(0.0, 2.0), device).int();
    (tokens, labels)
}

/// Returns a closure running one optimizer step on the parameters `mode` trains.
fn stepper<B: AutodiffBackend + peft::quant::fused::FusedOps>(model: TinyTransformer<B>, mode: TrainMode, device: B::Device) -> impl FnMut() {
    let mut model = Some(set_trainable(model, &mode));
    let mut optim = AdamConfig::new().init::<B, TinyTransformer<B>>();
    let (tokens, labels) = inputs::<B>(&device);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    move || {
        let m = model.take().unwrap();
        let loss = loss_fn.forward(m.forward(tokens.clone()), labels.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-4, m, grads));
    }
}

fn median_ns(name: &str) -> Option<f64> {
    let path = format!("{}/criterion/{name}/new/estimates.json", std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "../../target".into()));
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn main() {
    let device = Default::default();
    let base = model::<Train>(&device);
    let mut lora = base.clone();
    lora.add_adapter("bench", &LoraConfig::new(Targeting::names(&["q", "v"])).with_r(8).with_alpha(16.0)).unwrap();

    let mut c = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(3)).measurement_time(Duration::from_secs(20)).configure_from_args();
    let mut full_step = stepper(base.clone(), TrainMode::Full, device);
    c.bench_function("train_step_full", |b| b.iter(&mut full_step));
    let mut lora_step = stepper(lora.clone(), TrainMode::adapters(), device);
    c.bench_function("train_step_lora_qv_r8", |b| b.iter(&mut lora_step));

    let (base_inf, lora_inf) = (base.valid(), lora.valid());
    let (tokens, _) = inputs(&device);
    c.bench_function("forward_base", |b| b.iter(|| black_box(base_inf.forward(tokens.clone()).into_data())));
    c.bench_function("forward_lora_unmerged", |b| b.iter(|| black_box(lora_inf.forward(tokens.clone()).into_data())));
    let mut merged = lora_inf.clone();
    merged.merge_adapters(true).unwrap();
    c.bench_function("forward_lora_merged", |b| b.iter(|| black_box(merged.forward(tokens.clone()).into_data())));
    c.final_summary();

    let get = |n| median_ns(n).map(|v| v / 1e6);
    if let (Some(full), Some(lora), Some(fb), Some(fl), Some(fm)) =
        (get("train_step_full"), get("train_step_lora_qv_r8"), get("forward_base"), get("forward_lora_unmerged"), get("forward_lora_merged"))
    {
        println!("| measure | median | ratio |");
        println!("| --- | --- | --- |");
        println!("| full fine-tuning step | {full:.1} ms | 1.00 |");
        println!("| LoRA (r8, q/v) step | {lora:.1} ms | {:.2} of full |", lora / full);
        println!("| base forward | {fb:.1} ms | 1.00 |");
        println!("| unmerged LoRA forward | {fl:.1} ms | {:.3} of base |", fl / fb);
        println!("| merged LoRA forward | {fm:.1} ms | {:.3} of base |", fm / fb);
    }
}
