//! GPU measurements for peft-quant (needs the `cuda` feature and an NVIDIA GPU):
//! 1. NF4 dequantization of an 8192×8192 weight through Burn tensor operations, as a fraction of
//!    the card's memory bandwidth (give it with `--bandwidth-gbs`, 4800 for an H200);
//! 2. a QLoRA training step against a LoRA step on the same MLP stack.
//!
//! ```text
//! cargo build --release -p peft --features cuda --example gpu_quant
//! target/release/examples/gpu_quant --bandwidth-gbs 4800
//! ```

use std::time::Instant;

use burn::backend::{Autodiff, Cuda};
use burn::module::Module;
use peft::core::Layer;
use peft::models::mlp::ResidualMlp;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft::lora::QLoraLinear;
use peft::prelude::*;
use peft::quant::{QLinear, QuantConfig, Quantized4bit};

type G = Cuda<f32, i32>;
type Train = Autodiff<G>;

fn time<F: FnMut()>(device: &burn::tensor::Device<G>, reps: usize, mut f: F) -> f64 {
    f();
    G::sync(device).unwrap();
    let start = Instant::now();
    for _ in 0..reps {
        f();
    }
    G::sync(device).unwrap();
    start.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let bandwidth: f64 = std::env::args().skip_while(|a| a != "--bandwidth-gbs").nth(1).and_then(|v| v.parse().ok()).unwrap_or(4800.0);
    let device = Default::default();

    // 1. Dequantization bandwidth.
    let n = 8192usize;
    let host: Vec<f32> = (0..n * n).map(|i| ((i as u64).wrapping_mul(2654435761) % 10007) as f32 / 5003.5 - 1.0).collect();
    let q = Quantized4bit::quantize("w", &host, &[n, n], "float32", QuantConfig::qlora()).unwrap();
    let layer = QLinear::<G>::from_quantized(&q, None, &device).unwrap();
    let check = layer.dequantize().slice([0..4, 0..4]).into_data();
    println!("dequantized corner: {:?}", check.to_vec::<f32>().unwrap());
    let secs = time(&device, 20, || {
        let _ = layer.dequantize();
    });
    let bytes = (n * n) as f64 / 2.0 + 4.0 * (n * n / 64) as f64 + 4.0 * (n * n) as f64;
    println!(
        "NF4 dequantization 8192x8192 -> f32 (Burn tensor ops): {:.3} ms, {:.0} GB/s, {:.1}% of {bandwidth} GB/s",
        secs * 1e3,
        bytes / secs / 1e9,
        100.0 * bytes / secs / 1e9 / bandwidth
    );

    // 2. QLoRA vs LoRA step on a TinyLlama-width MLP stack.
    let (d, ff, layers, tokens) = (2048, 5632, 4, 4096);
    let lora_cfg = LoraConfig::new(Targeting::names(&["up", "down"])).with_r(16).with_alpha(32.0);
    let dense: Vec<(Linear<Train>, Linear<Train>)> = (0..layers).map(|_| (LinearConfig::new(d, ff).init(&device).no_grad(), LinearConfig::new(ff, d).init(&device).no_grad())).collect();
    let mut lora: ResidualMlp<Train, LoraLinear<Train>> = ResidualMlp::new(dense.iter().map(|(u, dn)| (Tuned::new(u.clone()), Tuned::new(dn.clone()))).collect());
    let qz = |l: &Linear<Train>| Tuned::new(QLinear::from_linear(l, QuantConfig::qlora()).unwrap());
    let mut qlora: ResidualMlp<Train, QLoraLinear<Train>> = ResidualMlp::new(dense.iter().map(|(u, dn)| (qz(u), qz(dn))).collect());
    drop(dense);
    lora.add_adapter("a", &lora_cfg).unwrap();
    qlora.add_adapter("a", &lora_cfg).unwrap();
    let x = Tensor::<Train, 2>::random([tokens, d], Distribution::Default, &device);
    let lora_s = step_time(lora, &x, &device);
    let qlora_s = step_time(qlora, &x, &device);
    println!("training step, {layers} blocks {d}->{ff}->{d}, {tokens} tokens, f32: LoRA {:.1} ms, QLoRA {:.1} ms, ratio {:.2}", lora_s * 1e3, qlora_s * 1e3, qlora_s / lora_s);
}

fn step_time<L>(model: ResidualMlp<Train, L>, x: &Tensor<Train, 2>, device: &burn::tensor::Device<G>) -> f64
where
    L: Layer<Train, Tensor<Train, 2>, Output = Tensor<Train, 2>> + burn::module::AutodiffModule<Train> + 'static,
    ResidualMlp<Train, L>: burn::module::AutodiffModule<Train>,
{
    let mut model = Some(set_trainable(model, &TrainMode::adapters()));
    let mut optim = AdamConfig::new().init::<Train, ResidualMlp<Train, L>>();
    time(device, 5, || {
        let m = model.take().unwrap();
        let loss = m.forward(x.clone()).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        model = Some(optim.step(1e-4, m, grads));
    })
}
