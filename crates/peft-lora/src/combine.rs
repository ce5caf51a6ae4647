//! Weighted combination of LoRA adapters into one (HF peft's `add_weighted_adapter`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use peft_core::{Combination, MajoritySign, PeftError, Result};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::{Lora, svd};

/// One adapter standing for the weighted `parts`; see [`Combination`] for the formulas.
pub fn combine<B: Backend>(parts: &[(&Lora<B>, f64)], how: Combination) -> Result<Lora<B>> {
    let Some((first, _)) = parts.first() else {
        return Err(PeftError::InvalidConfig("no adapters to combine".into()));
    };
    if parts.iter().any(|(l, _)| l.magnitude.is_some() || l.bias.is_some() || l.gate.is_some()) {
        return Err(PeftError::CannotCombine("DoRA adapters, LoRA biases and gated LoRA have no weighted combination".into()));
    }
    if parts.iter().any(|(_, w)| !w.is_finite()) {
        return Err(PeftError::InvalidConfig("combination weights must be finite".into()));
    }
    let (a, b) = match how {
        Combination::Linear => {
            if parts.iter().any(|(l, _)| l.rank() != first.rank()) {
                return Err(PeftError::InvalidConfig("linear combination needs adapters of equal rank; use Cat".into()));
            }
            let mut a = first.a.val().zeros_like();
            let mut b = first.b.val().zeros_like();
            for (lora, w) in parts {
                let root = (w.abs() * lora.scaling).sqrt();
                a = a + lora.a.val().mul_scalar(root * w.signum());
                b = b + lora.b.val().mul_scalar(root);
            }
            (a, b)
        }
        Combination::Cat => {
            let a = parts.iter().map(|(l, w)| l.a.val().mul_scalar(w * l.scaling)).collect::<Vec<Tensor<B, 2>>>();
            let b = parts.iter().map(|(l, _)| l.b.val()).collect::<Vec<Tensor<B, 2>>>();
            (Tensor::cat(a, 1), Tensor::cat(b, 0))
        }
        Combination::Svd { rank } => truncated_svd(parts, rank.unwrap_or_else(|| parts.iter().map(|(l, _)| l.rank()).max().unwrap_or(0)))?,
        Combination::Ties { density, majority_sign } => pruned_merge(parts, Pruning::Magnitude(density), Some(majority_sign))?,
        Combination::MagnitudePrune { density } => pruned_merge(parts, Pruning::Magnitude(density), None)?,
        Combination::DareLinear { density, seed } => pruned_merge(parts, Pruning::Random { density, seed }, None)?,
        Combination::DareTies { density, majority_sign, seed } => pruned_merge(parts, Pruning::Random { density, seed }, Some(majority_sign))?,
    };
    Lora::from_factors(a.detach(), b.detach(), 1.0)
}

/// The factors of the best rank-`rank` approximation of `Σ wᵢ·sᵢ·AᵢBᵢ`.
///
/// The update is the product of the concatenated factors `Ac = [w₁s₁A₁ | …]` (`d_in × R`) and
/// `Bc = [B₁; …]` (`R × d_out`), `R = Σ rᵢ`, so its SVD comes from two thin ones:
/// `Ac = Uₐ·Sₐ·Vₐᵀ`, then `Sₐ·Vₐᵀ·Bc = Uₘ·S·Vᵀ`, and `Ac·Bc = (Uₐ·Uₘ)·S·Vᵀ`: `O((d_in + d_out)·R²)`
/// work on the host instead of an SVD of the `d_in × d_out` matrix.
fn truncated_svd<B: Backend>(parts: &[(&Lora<B>, f64)], rank: usize) -> Result<(Tensor<B, 2>, Tensor<B, 2>)> {
    let (first, _) = parts[0];
    let ([rows, _], [_, cols]) = (first.a.dims(), first.b.dims());
    if rank == 0 {
        return Err(PeftError::ZeroRank { path: String::new() });
    }
    if rank > rows.min(cols) {
        return Err(PeftError::RankTooLarge { path: String::new(), rank, max: rows.min(cols) });
    }
    let host = |t: Tensor<B, 2>| t.into_data().convert::<f64>().into_vec::<f64>().unwrap_or_default();
    let inner: usize = parts.iter().map(|(l, _)| l.rank()).sum();
    let mut ac = vec![0.0; rows * inner];
    let mut bc = Vec::with_capacity(inner * cols);
    let mut at = 0;
    for (lora, w) in parts {
        let r = lora.rank();
        for (i, row) in host(lora.a.val()).chunks(r).enumerate() {
            for (j, v) in row.iter().enumerate() {
                ac[i * inner + at + j] = v * w * lora.scaling;
            }
        }
        bc.extend(host(lora.b.val()));
        at += r;
    }
    let (ua, sa, vta) = svd(&ac, rows, inner);
    let ka = sa.len();
    // M = Sₐ·Vₐᵀ·Bc (ka × cols).
    let mut m = vec![0.0; ka * cols];
    for i in 0..ka {
        for l in 0..inner {
            let f = sa[i] * vta[i * inner + l];
            for c in 0..cols {
                m[i * cols + c] += f * bc[l * cols + c];
            }
        }
    }
    let (um, s, vt) = svd(&m, ka, cols);
    let k = s.len();
    // A = (Uₐ·Uₘ)[:, :rank], B = S[:rank]·Vᵀ[:rank]; components past the update's own rank are 0.
    let mut a = vec![0.0f32; rows * rank];
    for i in 0..rows {
        for j in 0..rank.min(k) {
            a[i * rank + j] = (0..ka).map(|l| ua[i * ka + l] * um[l * k + j]).sum::<f64>() as f32;
        }
    }
    let mut b = vec![0.0f32; rank * cols];
    for j in 0..rank.min(k) {
        for c in 0..cols {
            b[j * cols + c] = (s[j] * vt[j * cols + c]) as f32;
        }
    }
    let (device, dtype) = (first.a.device(), first.a.val().dtype());
    let tensor = |values: Vec<f32>, shape: [usize; 2]| Tensor::<B, 2>::from_data(TensorData::new(values, shape), &device).cast(dtype);
    Ok((tensor(a, [rows, rank]), tensor(b, [rank, cols])))
}

/// How each factor is sparsified before merging.
#[derive(Clone, Copy)]
enum Pruning {
    /// Its `floor(density · n)` largest magnitudes kept (TIES, magnitude pruning).
    Magnitude(f64),
    /// Each value kept with probability `density` and divided by it (DARE).
    Random { density: f64, seed: u64 },
}

/// TIES-merging (`Some(sign)`) or a weighted sum (`None`) of the pruned factors, each of `A` and of
/// `B` on its own, as peft's `ties`, `magnitude_prune`, `dare_linear` and `dare_ties` do, in `f32`.
fn pruned_merge<B: Backend>(parts: &[(&Lora<B>, f64)], pruning: Pruning, sign: Option<MajoritySign>) -> Result<(Tensor<B, 2>, Tensor<B, 2>)> {
    let (first, _) = parts[0];
    if parts.iter().any(|(l, _)| l.rank() != first.rank()) {
        return Err(PeftError::InvalidConfig("TIES, DARE and magnitude pruning need adapters of equal rank; use Cat or Svd".into()));
    }
    match pruning {
        Pruning::Magnitude(density) if !(0.0..=1.0).contains(&density) => return Err(PeftError::InvalidConfig(format!("density must be in [0, 1], got {density}"))),
        Pruning::Random { density, .. } if !(density > 0.0 && density <= 1.0) => return Err(PeftError::InvalidConfig(format!("DARE's density must be in (0, 1], got {density}"))),
        _ => {}
    }
    let host = |t: Tensor<B, 2>| t.into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
    let scaled = |(l, w): &(&Lora<B>, f64)| w * l.scaling;
    let a: Vec<Vec<f32>> = parts.iter().map(|(l, _)| host(l.a.val())).collect();
    let b: Vec<Vec<f32>> = parts.iter().map(|(l, _)| host(l.b.val())).collect();
    let wa: Vec<f32> = parts.iter().map(|p| (scaled(p).abs().sqrt() * scaled(p).signum()) as f32).collect();
    let wb: Vec<f32> = parts.iter().map(|p| scaled(p).abs().sqrt() as f32).collect();
    let (device, dtype) = (first.a.device(), first.a.val().dtype());
    let tensor = |values: Vec<f32>, dims: [usize; 2]| Tensor::<B, 2>::from_data(TensorData::new(values, dims), &device).cast(dtype);
    // A's and B's random masks come from one stream, A's first, as peft draws them.
    let mut rng = match pruning {
        Pruning::Random { seed, .. } => Some(Xoshiro256PlusPlus::seed_from_u64(seed)),
        Pruning::Magnitude(_) => None,
    };
    let mut prune = |t: &Vec<f32>| match (pruning, rng.as_mut()) {
        (Pruning::Random { density, .. }, Some(rng)) => t.iter().map(|&v| if rng.random::<f64>() < density { v / density as f32 } else { 0.0 }).collect(),
        (Pruning::Magnitude(density), _) | (Pruning::Random { density, .. }, None) => keep_largest(t, density),
    };
    let a: Vec<Vec<f32>> = a.iter().map(&mut prune).collect();
    let b: Vec<Vec<f32>> = b.iter().map(&mut prune).collect();
    Ok((tensor(merge_pruned(&a, &wa, sign), first.a.dims()), tensor(merge_pruned(&b, &wb, sign), first.b.dims())))
}

/// One factor merged from its pruned parts (same length) with `weights`.
fn merge_pruned(pruned: &[Vec<f32>], weights: &[f32], sign: Option<MajoritySign>) -> Vec<f32> {
    let n = pruned.first().map_or(0, Vec::len);
    (0..n)
        .map(|j| match sign {
            None => pruned.iter().zip(weights).map(|(t, w)| t[j] * w).sum(),
            Some(method) => {
                let elected = match method {
                    MajoritySign::Total => pruned.iter().map(|t| t[j]).sum::<f32>(),
                    MajoritySign::Frequency => pruned.iter().map(|t| sign_of(t[j])).sum::<f32>(),
                };
                let elected = if elected >= 0.0 { 1.0 } else { -1.0 };
                let agreeing = pruned.iter().zip(weights).filter(|(t, _)| sign_of(t[j]) == elected);
                let (sum, count) = agreeing.fold((0.0f32, 0.0f32), |(s, c), (t, w)| (s + t[j] * w, c + 1.0));
                sum / count.max(1.0)
            }
        })
        .collect()
}

/// `values` with all but its `floor(density · n)` largest magnitudes set to 0 (peft's
/// `magnitude_based_pruning`).
fn keep_largest(values: &[f32], density: f64) -> Vec<f32> {
    let k = (density * values.len() as f64) as usize;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&x, &y| values[y].abs().total_cmp(&values[x].abs()));
    let mut kept = vec![0.0; values.len()];
    for &i in &order[..k.min(values.len())] {
        kept[i] = values[i];
    }
    kept
}

/// torch's `sign`: -1, 0 or 1.
fn sign_of(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}
