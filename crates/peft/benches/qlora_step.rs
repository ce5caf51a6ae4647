//! QLoRA against LoRA on the same model, batch and compute dtype, measured in one run:
//! training-step time (criterion) and peak heap memory of one step (a counting allocator).
//!
//! ```text
//! cargo bench -p peft --bench qlora_step
//! ```
//!
//! Model: 4 blocks of `down(relu(up(x)))` with hidden 1024 and feed-forward 2816 (a
//! TinyLlama-like MLP width ratio), LoRA r = 16 on every linear layer, batch 2×128 tokens, f32,
//! burn-ndarray on the CPU.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use peft::core::Layer;
use peft_toy::mlp::ResidualMlp;
use burn::tensor::{Distribution, Tensor};
use criterion::Criterion;
use peft::lora::QLoraLinear;
use peft::prelude::*;
use peft::quant::{QLinear, QuantConfig};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

type Train = Autodiff<NdArray>;
const D: usize = 1024;
const FF: usize = 2816;
const LAYERS: usize = 4;
const TOKENS: usize = 256;

fn linears<B: Backend>(device: &B::Device) -> Vec<(Linear<B>, Linear<B>)> {
    (0..LAYERS).map(|_| (LinearConfig::new(D, FF).init(device).no_grad(), LinearConfig::new(FF, D).init(device).no_grad())).collect()
}

fn config() -> LoraConfig {
    LoraConfig::new(Targeting::names(&["up", "down"])).with_r(16).with_alpha(32.0)
}

fn stepper<B: AutodiffBackend, L>(model: ResidualMlp<B, L>, device: B::Device) -> impl FnMut()
where
    L: Layer<B, Tensor<B, 2>, Output = Tensor<B, 2>> + burn::module::AutodiffModule<B> + 'static,
    ResidualMlp<B, L>: burn::module::AutodiffModule<B>,
{
    let mut model = Some(set_trainable(model, &TrainMode::adapters()));
    let mut optim = AdamConfig::new().init::<B, ResidualMlp<B, L>>();
    let x = Tensor::<B, 2>::random([TOKENS, D], Distribution::Default, &device);
    move || {
        let m = model.take().unwrap();
        let loss = m.forward(x.clone()).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-4, m, grads));
    }
}

/// Heap bytes held between steps (model, adapters, optimizer state) and the peak during one step,
/// after a warm-up step.
fn memory_of(step: &mut impl FnMut()) -> (usize, usize) {
    step();
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    step();
    (base, PEAK.load(Ordering::Relaxed))
}

fn median_ms(name: &str) -> Option<f64> {
    let path = format!("{}/criterion/{name}/new/estimates.json", std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "../../target".into()));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64().map(|ns| ns / 1e6)
}

fn main() {
    let device = Default::default();
    let q = |l: &Linear<Train>| Tuned::new(QLinear::from_linear(l, QuantConfig::qlora()).unwrap());
    let build_lora = || {
        let mut m: ResidualMlp<Train, LoraLinear<Train>> = ResidualMlp::new(linears::<Train>(&device).into_iter().map(|(u, d)| (Tuned::new(u), Tuned::new(d))).collect());
        m.add_adapter("bench", &config()).unwrap();
        m
    };
    let build_qlora = || {
        let mut m: ResidualMlp<Train, QLoraLinear<Train>> = ResidualMlp::new(linears::<Train>(&device).iter().map(|(u, d)| (q(u), q(d))).collect());
        m.add_adapter("bench", &config()).unwrap();
        m
    };
    let mib = |b: usize| b as f64 / 1048576.0;

    // Each measured alone: heap before building, model built (dense layers dropped), one warm-up
    // step, then the level held between steps and the peak of the next step.
    let before = CURRENT.load(Ordering::Relaxed);
    let mut lora_step = stepper(build_lora(), device);
    let (lora_held, lora_peak) = memory_of(&mut lora_step);
    let (lora_held, lora_peak) = (lora_held - before, lora_peak - before);
    drop(lora_step);
    let before = CURRENT.load(Ordering::Relaxed);
    let mut qlora_step = stepper(build_qlora(), device);
    let (qlora_held, qlora_peak) = memory_of(&mut qlora_step);
    let (qlora_held, qlora_peak) = (qlora_held - before, qlora_peak - before);
    drop(qlora_step);

    let mut lora_step = stepper(build_lora(), device);
    let mut qlora_step = stepper(build_qlora(), device);
    let mut c = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(15)).configure_from_args();
    c.bench_function("qlora_bench_lora_step", |b| b.iter(&mut lora_step));
    c.bench_function("qlora_bench_qlora_step", |b| b.iter(&mut qlora_step));
    c.final_summary();

    println!("| measure | LoRA | QLoRA | QLoRA / LoRA |");
    println!("| --- | --- | --- | --- |");
    println!("| held between steps (model, adapters, Adam state) | {:.1} MiB | {:.1} MiB | {:.2} |", mib(lora_held), mib(qlora_held), qlora_held as f64 / lora_held as f64);
    println!("| peak during a training step | {:.1} MiB | {:.1} MiB | {:.2} |", mib(lora_peak), mib(qlora_peak), qlora_peak as f64 / lora_peak as f64);
    if let (Some(l), Some(q)) = (median_ms("qlora_bench_lora_step"), median_ms("qlora_bench_qlora_step")) {
        println!("| training step (criterion medians, one after the other) | {l:.1} ms | {q:.1} ms | {:.2} |", q / l);
    }
    // The machine's speed drifts over a run; alternating the two steps cancels the drift.
    let time = |step: &mut dyn FnMut()| {
        let t = std::time::Instant::now();
        step();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut l, mut q): (Vec<f64>, Vec<f64>) = (0..20).map(|_| (time(&mut lora_step), time(&mut qlora_step))).unzip();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (l, q) = (median(&mut l), median(&mut q));
    println!("| training step (medians of 20 alternating steps) | {l:.1} ms | {q:.1} ms | {:.2} |", q / l);
}
