#![allow(dead_code)]
use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, TensorData};
use peft_lora::LoraLinear;

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
