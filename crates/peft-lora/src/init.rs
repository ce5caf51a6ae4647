//! Initial values of LoRA's factors, and the rank check every LoRA layer shares.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use peft_core::{PeftError, Result};

use crate::LoraInit;
use crate::svd::svd;

/// `U(±1/sqrt(fan_in))`: PyTorch's kaiming-uniform with `a = sqrt(5)`, as HF peft inits `A`.
pub fn kaiming_uniform_a_sqrt5<B: Backend, const D: usize>(shape: [usize; D], fan_in: usize, device: &B::Device) -> Tensor<B, D> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::random(shape, Distribution::Uniform(-bound, bound), device)
}

/// `N(0, std)`.
pub fn normal<B: Backend, const D: usize>(shape: [usize; D], std: f64, device: &B::Device) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, std), device)
}

/// LoRA's down factor `A` of `shape` at start, rank `r`: `N(0, 1/r)` with the gaussian init,
/// kaiming-uniform over `fan_in` otherwise (PiSSA computes its own).
pub fn init_a<B: Backend, const D: usize>(init: LoraInit, shape: [usize; D], fan_in: usize, r: usize, device: &B::Device) -> Tensor<B, D> {
    match init {
        LoraInit::Gaussian => normal(shape, 1.0 / r as f64, device),
        _ => kaiming_uniform_a_sqrt5(shape, fan_in, device),
    }
}

/// Checks that rank `r` fits a weight with `fan_in` inputs and `fan_out` outputs.
pub fn check_rank(path: &str, r: usize, fan_in: usize, fan_out: usize) -> Result<()> {
    let max = fan_in.min(fan_out);
    if r > max {
        return Err(PeftError::RankTooLarge { path: path.into(), rank: r, max });
    }
    Ok(())
}

/// PiSSA factors of a weight `w` stored `[d_in, d_out]`: returns `(A [d_in, r], B [r, d_out],
/// residual)` with `residual + scaling·A·B = w`, `A·B` holding the top-`r` singular directions.
pub fn pissa<B: Backend>(w: Tensor<B, 2>, r: usize, scaling: f64, path: &str) -> Result<(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>)> {
    let [rows, cols] = w.dims();
    let device = w.device();
    let dtype = w.dtype();
    let data: Vec<f32> = w.to_data().convert::<f32>().to_vec().map_err(|_| PeftError::UnsupportedDtype { name: format!("{path} weight"), dtype: format!("{dtype:?}"), expected: "a float type" })?;
    let data: Vec<f64> = data.into_iter().map(f64::from).collect();
    let (u, s, vt) = svd(&data, rows, cols);
    let mut a = vec![0f32; rows * r];
    let mut b = vec![0f32; r * cols];
    for k in 0..r {
        let root = (s[k] / scaling).sqrt();
        for i in 0..rows {
            a[i * r + k] = (u[i * s.len() + k] * root) as f32;
        }
        for j in 0..cols {
            b[k * cols + j] = (vt[k * cols + j] * root) as f32;
        }
    }
    if a.iter().chain(&b).any(|v| !v.is_finite()) {
        return Err(PeftError::NonFinite { path: path.into(), adapter: "pissa init".into() });
    }
    let a = Tensor::<B, 2>::from_data(TensorData::new(a, [rows, r]), &device);
    let b = Tensor::<B, 2>::from_data(TensorData::new(b, [r, cols]), &device);
    let residual = w - a.clone().matmul(b.clone()).mul_scalar(scaling);
    Ok((a, b, residual))
}
