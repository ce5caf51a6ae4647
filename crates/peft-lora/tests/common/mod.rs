#![allow(dead_code)]
use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, ElementConversion};
use peft_core::{PeftModel, Targeting, TrainMode, set_trainable};
use peft_lora::{LoraConfig, LoraLinear};
use peft_quant::backend::QuantLinearBackend;

pub type Nd = NdArray<f32>;
pub type Ad = Autodiff<Nd>;

pub fn dev() -> burn::backend::ndarray::NdArrayDevice {
    Default::default()
}

pub fn values<B: burn::tensor::backend::Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data().convert::<f32>().to_vec().unwrap()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn seq(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f64 / (1u64 << 31) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

pub fn tensor<B: burn::tensor::backend::Backend, const D: usize>(dims: [usize; D], seed: u64) -> Tensor<B, D> {
    let n = dims.iter().product();
    Tensor::from_data(TensorData::new(seq(n, seed), dims), &Default::default())
}

/// A `Linear` with known weights `[d_in, d_out]` and bias.
pub fn linear<B: burn::tensor::backend::Backend>(d_in: usize, d_out: usize, seed: u64) -> Linear<B> {
    let mut l = LinearConfig::new(d_in, d_out).init::<B>(&Default::default());
    l.weight = Param::initialized(ParamId::new(), tensor([d_in, d_out], seed));
    l.bias = Some(Param::initialized(ParamId::new(), tensor([d_out], seed + 1)));
    l
}

/// Host matmul of row-major `[n, k] x [k, m]`.
pub fn matmul(a: &[f32], b: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for i in 0..n {
        for j in 0..m {
            out[i * m + j] = (0..k).map(|l| a[i * k + l] * b[l * m + j]).sum();
        }
    }
    out
}

pub fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= rel * scale, "{what}: index {i}: {x} vs {y} (tol {})", rel * scale);
    }
}

/// A two-layer block as a user would write it, adapted through the typed wrappers.
#[derive(Module, Debug)]
pub struct Mlp<B: burn::tensor::backend::Backend> {
    pub up: LoraLinear<B>,
    pub down: LoraLinear<B>,
}
peft_core::adaptable!(Mlp { up, down });

impl<B: burn::tensor::backend::Backend> Mlp<B> {
    pub fn new(seed: u64) -> Self {
        Self { up: LoraLinear::new(linear(6, 8, seed)), down: LoraLinear::new(linear(8, 4, seed + 10)) }
    }
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.down.forward(burn::tensor::activation::relu(self.up.forward(x)))
    }
}

/// Two 4-bit layers with LoRA, `d -> 2d -> d`.
#[derive(Module, Debug)]
pub struct QMlp<B: burn::tensor::backend::Backend> {
    pub up: peft_lora::QLoraLinear<B>,
    pub down: peft_lora::QLoraLinear<B>,
}
peft_core::adaptable!(QMlp { up, down });

impl<B: peft_quant::backend::QuantLinearBackend> QMlp<B> {
    pub fn new(d: usize, seed: u64) -> Self {
        let q = |l: &burn::nn::Linear<B>| peft_core::Tuned::new(peft_quant::QLinear::from_linear(l, peft_quant::QuantConfig::qlora()).unwrap());
        Self { up: q(&linear(d, 2 * d, seed)), down: q(&linear(2 * d, d, seed + 1)) }
    }
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.down.forward(burn::tensor::activation::relu(self.up.forward(x)))
    }
}

/// Trains LoRA on the 4-bit MLP with compute type `dtype`; returns the first and last loss.
pub fn train<B: AutodiffBackend + QuantLinearBackend>(dtype: DType) -> (f32, f32) {
    let mut m = QMlp::<B>::new(16, 1);
    m.add_adapter("task", &LoraConfig::new(Targeting::names(&["up", "down"])).with_r(4).with_alpha(8.0)).unwrap();
    let mut m = set_trainable(m, &TrainMode::adapters());
    // The frozen base computes in `dtype`; the adapter's weights stay in f32 (peft's autocast).
    assert_eq!(m.up.adapter("task").unwrap().a.val().dtype(), DType::F32);
    let words_before = values(&m.up.base.words.clone().float());
    let x = tensor::<B, 2>([32, 16], 2);
    let target = tensor::<B, 2>([32, 16], 3) * 0.5 + m.forward(x.clone()).detach();
    let mut optim = burn::optim::AdamConfig::new().init::<B, QMlp<B>>();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let loss = (m.forward(x.clone()) - target.clone()).square().mean();
        assert_eq!(loss.dtype(), dtype);
        losses.push(loss.clone().into_scalar().elem::<f32>());
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(5e-3, m, grads);
    }
    assert_eq!(values(&m.up.base.words.clone().float()), words_before, "the 4-bit base changed");
    assert_eq!(optim.to_record().len(), 4, "optimizer state beyond the four adapter factors");
    (losses[0], *losses.last().unwrap())
}
