//! [`FusedOps`] on burn-ndarray: each operation one pass (two for the reductions) over
//! contiguous rows, spread over rayon's threads. burn-ndarray 0.21 runs every elementwise
//! operation and reduction as a pass of its own on one thread (only its matrix products use
//! more), so the decompositions of [`FusedOps`]'s defaults walk their tensors five to ten times
//! on one core. Tensors that are not `f32`, and softmaxes over another dimension than the last,
//! take the defaults.

use burn::backend::NdArray;
use burn::backend::ndarray::{NdArrayTensor, SharedArray};
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use ndarray::IxDyn;
use rayon::prelude::*;

use super::FusedOps;

type Nd = NdArray<f32>;

/// One task's `((∂y, up), (σ(gate), silu(gate)))`.
type SwigluBackwardInputs<'a> = ((&'a [f32], &'a [f32]), (&'a [f32], &'a [f32]));

/// Elements per rayon task: below this a hand-off between threads costs more than the work.
const GRAIN: usize = 1 << 14;

impl FusedOps for Nd {
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        if !is_last_dim(&x, dim) {
            return super::default_softmax::<Self>(x, dim);
        }
        match contiguous(x) {
            Ok(x) => {
                let width = last_dim(&x);
                let mut y = zeros(x.len());
                rows_mut(&mut y, width).zip(rows(slice(&x), width)).for_each(|(y, x)| {
                    for (y, x) in y.chunks_mut(width).zip(x.chunks(width)) {
                        softmax_row(x, y);
                    }
                });
                tensor(x.shape(), y)
            }
            Err(x) => super::default_softmax::<Self>(x, dim),
        }
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        if !is_last_dim(&y, dim) || !same_f32_shape(&y, &grad) {
            return super::softmax_input_grad::<Self>(y, grad, dim);
        }
        let (y, grad) = (checked(y), checked(grad));
        let width = last_dim(&y);
        let mut dx = zeros(y.len());
        rows_mut(&mut dx, width).zip(rows(slice(&y), width)).zip(rows(slice(&grad), width)).for_each(|((dx, y), g)| {
            for ((dx, y), g) in dx.chunks_mut(width).zip(y.chunks(width)).zip(g.chunks(width)) {
                let dot = dot(g, y);
                for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                    *dx = y * (g - dot);
                }
            }
        });
        tensor(y.shape(), dx)
    }

    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        if !same_f32_shape(&gate, &up) {
            return super::default_swiglu::<Self>(gate, up);
        }
        let (gate, up) = (checked(gate), checked(up));
        let mut y = zeros(gate.len());
        flat_mut(&mut y).zip(flat(slice(&gate)).zip(flat(slice(&up)))).for_each(|(y, (gate, up))| swiglu_values(gate, up, y, None));
        tensor(gate.shape(), y)
    }

    fn fused_swiglu_saving(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> [FloatTensor<Self>; 3] {
        if !same_f32_shape(&gate, &up) {
            return super::default_swiglu_saving::<Self>(gate, up);
        }
        let (gate, up) = (checked(gate), checked(up));
        let n = gate.len();
        let (mut y, mut sigmoid, mut silu) = (zeros(n), zeros(n), zeros(n));
        flat_mut(&mut y)
            .zip(flat_mut(&mut sigmoid))
            .zip(flat_mut(&mut silu))
            .zip(flat(slice(&gate)).zip(flat(slice(&up))))
            .for_each(|(((y, sigmoid), silu), (gate, up))| swiglu_values(gate, up, y, Some((sigmoid, silu))));
        let shape = gate.shape();
        [tensor(shape, y), tensor(shape, sigmoid), tensor(shape, silu)]
    }

    fn fused_swiglu_backward(grad: FloatTensor<Self>, saved: [FloatTensor<Self>; 3], wanted: [bool; 2]) -> [Option<FloatTensor<Self>>; 2] {
        let [up, sigmoid, silu] = saved;
        if ![&up, &sigmoid, &silu].iter().all(|t| same_f32_shape(&grad, t)) {
            return super::default_swiglu_backward::<Self>(grad, [up, sigmoid, silu], wanted);
        }
        let [grad, up, sigmoid, silu] = [grad, up, sigmoid, silu].map(checked);
        let n = grad.len();
        let (mut d_gate, mut d_up) = (zeros(if wanted[0] { n } else { 0 }), zeros(if wanted[1] { n } else { 0 }));
        let (grad_s, up_s, sigmoid_s, silu_s) = (slice(&grad), slice(&up), slice(&sigmoid), slice(&silu));
        let inputs = flat(grad_s).zip(flat(up_s)).zip(flat(sigmoid_s).zip(flat(silu_s)));
        // silu'(g) = σ(g)·(1 + g·(1 − σ(g))) = σ + silu − silu·σ
        let gate_grad = |d: &mut [f32], ((g, up), (s, silu)): SwigluBackwardInputs| {
            for i in 0..d.len() {
                d[i] = g[i] * up[i] * (s[i] + silu[i] - silu[i] * s[i]);
            }
        };
        let up_grad = |d: &mut [f32], g: &[f32], silu: &[f32]| {
            for i in 0..d.len() {
                d[i] = g[i] * silu[i];
            }
        };
        match wanted {
            [true, true] => flat_mut(&mut d_gate).zip(flat_mut(&mut d_up)).zip(inputs).for_each(|((dg, du), inputs)| {
                up_grad(du, inputs.0.0, inputs.1.1);
                gate_grad(dg, inputs);
            }),
            [true, false] => flat_mut(&mut d_gate).zip(inputs).for_each(|(dg, inputs)| gate_grad(dg, inputs)),
            [false, true] => flat_mut(&mut d_up).zip(flat(grad_s).zip(flat(silu_s))).for_each(|(du, (g, silu))| up_grad(du, g, silu)),
            [false, false] => {}
        }
        let shape = grad.shape();
        [wanted[0].then(|| tensor(shape, d_gate)), wanted[1].then(|| tensor(shape, d_up))]
    }

    fn fused_rms_norm<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        if !rms_norm_shapes_fit(&x, &gamma) {
            return super::default_rms_norm::<Self, D>(x, gamma, epsilon);
        }
        let (x, gamma) = (checked(x), checked(gamma));
        let (width, gamma) = (last_dim(&x), slice(&gamma));
        let mut y = zeros(x.len());
        rows_mut(&mut y, width).zip(rows(slice(&x), width)).for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(width).zip(x.chunks(width)) {
                rms_norm_row(x, gamma, epsilon as f32, y, None);
            }
        });
        tensor(x.shape(), y)
    }

    fn fused_rms_norm_saving<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> [FloatTensor<Self>; 3] {
        if !rms_norm_shapes_fit(&x, &gamma) {
            return super::default_rms_norm_saving::<Self, D>(x, gamma, epsilon);
        }
        let (x, gamma) = (checked(x), checked(gamma));
        let (width, gamma) = (last_dim(&x), slice(&gamma));
        let n = x.len();
        let (mut y, mut normed, mut r) = (zeros(n), zeros(n), zeros(n / width));
        rows_mut(&mut y, width)
            .zip(rows_mut(&mut normed, width))
            .zip(r.par_chunks_mut(rows_per_task(width)))
            .zip(rows(slice(&x), width))
            .for_each(|(((y, normed), r), x)| {
                for (((y, normed), r), x) in y.chunks_mut(width).zip(normed.chunks_mut(width)).zip(r.iter_mut()).zip(x.chunks(width)) {
                    *r = rms_norm_row(x, gamma, epsilon as f32, y, Some(normed));
                }
            });
        let mut r_shape = x.shape().to_vec();
        *r_shape.last_mut().expect("rank ≥ 1") = 1;
        [tensor(x.shape(), y), tensor(x.shape(), normed), tensor(&r_shape, r)]
    }

    fn fused_rms_norm_backward<const D: usize>(grad: FloatTensor<Self>, saved: [FloatTensor<Self>; 3], wanted: [bool; 2]) -> [Option<FloatTensor<Self>>; 2] {
        let [normed, r, gamma] = saved;
        let shapes_fit = same_f32_shape(&grad, &normed) && rms_norm_shapes_fit(&grad, &gamma) && f32_shape(&r).is_some_and(|r| r.iter().product::<usize>() * last_dim_of(&grad) == numel(&grad));
        if !shapes_fit {
            return super::default_rms_norm_backward::<Self, D>(grad, [normed, r, gamma], wanted);
        }
        let [grad, normed, r, gamma] = [grad, normed, r, gamma].map(checked);
        let width = last_dim(&grad);
        let (grad_s, normed_s, r_s, gamma_s) = (slice(&grad), slice(&normed), slice(&r), slice(&gamma));
        let rows_per_task = rows_per_task(width);
        let d_x = wanted[0].then(|| {
            let mut d_x = zeros(grad.len());
            d_x.par_chunks_mut(width * rows_per_task)
                .zip(rows(grad_s, width).zip(rows(normed_s, width)))
                .zip(r_s.par_chunks(rows_per_task))
                .for_each(|((d_x, (g, normed)), r)| {
                    for (((d_x, g), normed), r) in d_x.chunks_mut(width).zip(g.chunks(width)).zip(normed.chunks(width)).zip(r) {
                        // g' = ∂y·γ, ∂x = r·(g' − x̂·mean(g'·x̂))
                        let dot = dot3(g, gamma_s, normed) / width as f32;
                        for (((d_x, g), normed), gamma) in d_x.iter_mut().zip(g).zip(normed).zip(gamma_s) {
                            *d_x = (g * gamma - normed * dot) * r;
                        }
                    }
                });
            tensor(grad.shape(), d_x)
        });
        let d_gamma = wanted[1].then(|| {
            // One partial sum per task, added in task order: the same result whichever thread
            // ran which task.
            let partials: Vec<Vec<f32>> = rows(grad_s, width)
                .zip(rows(normed_s, width))
                .map(|(g, normed)| {
                    let mut part = vec![0f32; width];
                    for (g, normed) in g.chunks(width).zip(normed.chunks(width)) {
                        for ((part, g), normed) in part.iter_mut().zip(g).zip(normed) {
                            *part += g * normed;
                        }
                    }
                    part
                })
                .collect();
            let mut sum = vec![0f32; width];
            for part in partials {
                sum.iter_mut().zip(part).for_each(|(sum, part)| *sum += part);
            }
            tensor(&[width], sum)
        });
        [d_x, d_gamma]
    }

    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>, weights: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        let vocab = last_dim_of(&logits);
        let indices = target_indices(&targets, vocab);
        let (Some(indices), Some(_), Some(_)) = (indices, f32_shape(&logits), f32_shape(&weights)) else {
            return super::default_cross_entropy::<Self>(logits, targets, weights);
        };
        let tokens = indices.len();
        if vocab == 0 || tokens * vocab != numel(&logits) || tokens != numel(&weights) {
            return super::default_cross_entropy::<Self>(logits, targets, weights);
        }
        let (logits, weights) = (checked(logits), checked(weights));
        let (mut loss, mut grad) = (zeros(tokens), zeros(logits.len()));
        let rows_per_task = rows_per_task(vocab);
        grad.par_chunks_mut(vocab * rows_per_task)
            .zip(loss.par_chunks_mut(rows_per_task))
            .zip(rows(slice(&logits), vocab))
            .zip(indices.par_chunks(rows_per_task).zip(slice(&weights).par_chunks(rows_per_task)))
            .for_each(|(((grad, loss), logits), (targets, weights))| {
                for ((((grad, loss), logits), &target), &weight) in grad.chunks_mut(vocab).zip(loss.iter_mut()).zip(logits.chunks(vocab)).zip(targets).zip(weights) {
                    let max = max_of(logits);
                    let total = exp_shifted(logits, max, grad);
                    *loss = (max + total.ln() - logits[target]) * weight;
                    let scale = weight / total;
                    grad.iter_mut().for_each(|g| *g *= scale);
                    grad[target] -= weight;
                }
            });
        [tensor(&[tokens, 1], loss), tensor(logits.shape(), grad)]
    }

    fn strided_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let (Some(&[m, k]), Some(&[k_rhs, n])) = (f32_shape(&lhs), f32_shape(&rhs)) else {
            return Self::float_matmul(lhs, rhs);
        };
        if k == k_rhs && m * n * k == 0 {
            // An empty sum is zero (burn-ndarray's own matmul divides by `k` there).
            return tensor(&[m, n], zeros(m * n));
        }
        let (Some(lhs_view), Some(rhs_view), true) = (matrix(&lhs), matrix(&rhs), k == k_rhs) else {
            return Self::float_matmul(lhs, rhs);
        };
        let mut out = zeros(m * n);
        let threads = gemm::Parallelism::Rayon(rayon::current_num_threads());
        // SAFETY: both views lie inside their arrays, which live to the end of this function
        // (`matrix`); `out` holds `m·n` values in rows of `n`; gemm reads `lhs` and `rhs` and
        // writes `out` only (`read_dst: false`: `out = lhs·rhs`, alpha unused).
        unsafe {
            gemm::gemm(
                m, n, k,
                out.as_mut_ptr(), 1, n as isize, false,
                lhs_view.start, lhs_view.strides[1], lhs_view.strides[0],
                rhs_view.start, rhs_view.strides[1], rhs_view.strides[0],
                0.0f32, 1.0f32, false, false, false, threads,
            );
        }
        tensor(&[m, n], out)
    }
}

/// A 2-D `f32` array as gemm reads it: where its first value lies and its strides (in values,
/// positive, so that every value read lies inside the array).
struct Matrix {
    start: *const f32,
    strides: [isize; 2],
}

/// `x` as a [`Matrix`], or `None` when it is not 2-D `f32` or its strides are zero or negative
/// (broadcast or flipped views, which burn-ndarray's own matmul takes).
fn matrix(x: &FloatTensor<Nd>) -> Option<Matrix> {
    let NdArrayTensor::F32(storage) = x else { return None };
    let array = storage.view();
    let (&[rows, cols], &[row_stride, col_stride]) = (array.shape(), array.strides()) else { return None };
    let fits = |len: usize, stride: isize| len <= 1 || stride > 0;
    (fits(rows, row_stride) && fits(cols, col_stride)).then(|| Matrix { start: array.as_ptr(), strides: [row_stride.max(1), col_stride.max(1)] })
}

/// `x` as a contiguous `f32` array (copied only when its layout is not row-major), or `x` itself
/// when it holds another type.
fn contiguous(x: FloatTensor<Nd>) -> Result<SharedArray<f32>, FloatTensor<Nd>> {
    match x {
        NdArrayTensor::F32(storage) => {
            let array = storage.into_shared();
            Ok(if array.is_standard_layout() { array } else { array.as_standard_layout().into_owned().into_shared() })
        }
        other => Err(other),
    }
}

/// [`contiguous`] for a tensor already checked to hold `f32`.
fn checked(x: FloatTensor<Nd>) -> SharedArray<f32> {
    match contiguous(x) {
        Ok(x) => x,
        Err(_) => unreachable!("checked to be f32 before"),
    }
}

/// The shape of `x` when it holds `f32` (the only type the kernels take).
fn f32_shape(x: &FloatTensor<Nd>) -> Option<&[usize]> {
    match x {
        NdArrayTensor::F32(x) => Some(x.shape()),
        _ => None,
    }
}

fn same_f32_shape(a: &FloatTensor<Nd>, b: &FloatTensor<Nd>) -> bool {
    f32_shape(a).is_some_and(|a| f32_shape(b) == Some(a))
}

fn is_last_dim(x: &FloatTensor<Nd>, dim: usize) -> bool {
    f32_shape(x).is_some_and(|shape| dim + 1 == shape.len())
}

/// `x` holds `f32` rows of at least one value and `gamma` one `f32` per value of a row.
fn rms_norm_shapes_fit(x: &FloatTensor<Nd>, gamma: &FloatTensor<Nd>) -> bool {
    f32_shape(x).is_some() && f32_shape(gamma).is_some() && last_dim_of(x) > 0 && numel(gamma) == last_dim_of(x)
}

/// Values in `x` (0 when it does not hold `f32`).
fn numel(x: &FloatTensor<Nd>) -> usize {
    f32_shape(x).map_or(0, |shape| shape.iter().product())
}

fn last_dim_of(x: &FloatTensor<Nd>) -> usize {
    f32_shape(x).map_or(1, |shape| shape.last().copied().unwrap_or(1))
}

/// Every target as an index below `vocab`, or `None` (then the default operations run, and
/// report an out-of-range target as they always have).
fn target_indices(targets: &IntTensor<Nd>, vocab: usize) -> Option<Vec<usize>> {
    fn below<T: Copy + TryInto<usize>>(values: impl Iterator<Item = T>, vocab: usize) -> Option<Vec<usize>> {
        values.map(|t| t.try_into().ok().filter(|&t| t < vocab)).collect()
    }
    match targets {
        NdArrayTensor::I64(t) => below(t.view().iter().copied(), vocab),
        NdArrayTensor::I32(t) => below(t.view().iter().copied(), vocab),
        _ => None,
    }
}

fn last_dim(x: &SharedArray<f32>) -> usize {
    x.shape().last().copied().unwrap_or(1).max(1)
}

fn slice(x: &SharedArray<f32>) -> &[f32] {
    x.as_slice().expect("contiguous")
}

fn zeros(n: usize) -> Vec<f32> {
    vec![0.0; n]
}

fn tensor(shape: &[usize], values: Vec<f32>) -> FloatTensor<Nd> {
    SharedArray::from_shape_vec(IxDyn(shape), values).expect("the values fill the shape").into()
}

/// Whole rows per rayon task, at least [`GRAIN`] elements when the rows are short.
fn rows_per_task(width: usize) -> usize {
    GRAIN.div_ceil(width.max(1))
}

/// `x` in tasks of whole rows of `width`.
fn rows(x: &[f32], width: usize) -> rayon::slice::Chunks<'_, f32> {
    x.par_chunks(width * rows_per_task(width))
}

fn rows_mut(x: &mut [f32], width: usize) -> rayon::slice::ChunksMut<'_, f32> {
    x.par_chunks_mut(width * rows_per_task(width))
}

/// `x` in tasks of [`GRAIN`] elements.
fn flat(x: &[f32]) -> rayon::slice::Chunks<'_, f32> {
    x.par_chunks(GRAIN)
}

fn flat_mut(x: &mut [f32]) -> rayon::slice::ChunksMut<'_, f32> {
    x.par_chunks_mut(GRAIN)
}

/// Softmax of one row: `exp(x − max) / Σ`, the formula of Burn's decomposition (its `exp` and
/// summation order differ, within a few ulp).
fn softmax_row(x: &[f32], y: &mut [f32]) {
    let total = exp_shifted(x, max_of(x), y);
    y.iter_mut().for_each(|y| *y /= total);
}

/// `y = silu(gate)·up` over one task, writing `σ(gate)` and `silu(gate)` into `saved` when given.
fn swiglu_values(gate: &[f32], up: &[f32], y: &mut [f32], saved: Option<(&mut [f32], &mut [f32])>) {
    let sigmoid = |g: f32| 1.0 / (1.0 + exp(-g));
    match saved {
        Some((saved_sigmoid, saved_silu)) => {
            for i in 0..y.len() {
                let s = sigmoid(gate[i]);
                saved_sigmoid[i] = s;
                saved_silu[i] = gate[i] * s;
                y[i] = saved_silu[i] * up[i];
            }
        }
        None => {
            for i in 0..y.len() {
                y[i] = gate[i] * sigmoid(gate[i]) * up[i];
            }
        }
    }
}

/// `y = x̂·γ` with `x̂ = x·r`, `r = 1/√(mean(x²) + ε)`, over one row, writing `x̂` into `normed`
/// when given; returns `r`.
fn rms_norm_row(x: &[f32], gamma: &[f32], epsilon: f32, y: &mut [f32], normed: Option<&mut [f32]>) -> f32 {
    let r = 1.0 / (dot(x, x) / x.len() as f32 + epsilon).sqrt();
    match normed {
        Some(normed) => {
            for ((y, normed), (x, gamma)) in y.iter_mut().zip(normed.iter_mut()).zip(x.iter().zip(gamma)) {
                *normed = x * r;
                *y = *normed * gamma;
            }
        }
        None => {
            for (y, (x, gamma)) in y.iter_mut().zip(x.iter().zip(gamma)) {
                *y = x * r * gamma;
            }
        }
    }
    r
}

/// `eˣ` within 2 ulp (Cephes' `expf`: `x = n·ln 2 + r`, a degree-6 polynomial in `r`, `2ⁿ` from
/// the exponent bits), in operations the compiler turns into vector instructions, where
/// `f32::exp` is a call into libm per value. Below `e^−87.3` (the smallest normal `f32`) it
/// gives 0, so masked positions (`−inf`) get exactly 0; above `e^88` it gives `+inf`; `NaN`
/// stays `NaN`.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, the first exact in a few bits, so that `x − n·ln 2` loses nothing.
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    // Adding then subtracting 1.5·2²³ rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LOWEST: f32 = -87.336_55;
    const HIGHEST: f32 = 88.0;
    // `clamp` keeps a NaN (where `min`/`max` would turn it into a bound).
    let inside = x.clamp(LOWEST, HIGHEST);
    let n = (inside * LOG2_E + ROUND) - ROUND;
    let r = inside - n * LN2_HIGH - n * LN2_LOW;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 0.5;
    let two_to_n = f32::from_bits((((n as i32) + 127) as u32) << 23);
    let y = (p * r * r + r + 1.0) * two_to_n;
    if x < LOWEST {
        0.0
    } else if x > HIGHEST {
        f32::INFINITY
    } else {
        y
    }
}

/// Independent accumulators per row, so that the reductions below compile to vector
/// instructions (a single running value is a chain the compiler may not reorder).
const LANES: usize = 8;

/// The largest value of `x` (`-inf` when empty).
fn max_of(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    lanes.into_iter().chain(rest.iter().copied()).fold(f32::NEG_INFINITY, |m, x| if x > m { x } else { m })
}

/// `Σ a·b`.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, a), b) in lanes.iter_mut().zip(a).zip(b) {
            *lane += a * b;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// `Σ a·b·c`.
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks, c_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let rest: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).zip(c_chunks.remainder()).map(|((a, b), c)| a * b * c).sum();
    for ((a, b), c) in a_chunks.zip(b_chunks).zip(c_chunks) {
        for (((lane, a), b), c) in lanes.iter_mut().zip(a).zip(b).zip(c) {
            *lane += a * b * c;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// `out = exp(x − shift)`, returning `Σ out`: in AVX-512 or AVX2 instructions where the CPU has
/// them (the crates are built for baseline x86-64, whose vectors hold four values), the same
/// operations in the same order on every path, so the same bits.
fn exp_shifted(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has the feature the function is compiled for.
            return unsafe { exp_shifted_avx512(x, shift, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { exp_shifted_avx2(x, shift, out) };
        }
    }
    exp_shifted_values(x, shift, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_shifted_avx512(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    exp_shifted_values(x, shift, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exp_shifted_avx2(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    exp_shifted_values(x, shift, out)
}

#[inline(always)]
fn exp_shifted_values(x: &[f32], shift: f32, out: &mut [f32]) -> f32 {
    for (out, x) in out.iter_mut().zip(x) {
        *out = exp(x - shift);
    }
    let mut lanes = [0f32; LANES];
    let chunks = out.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Int, Tensor, TensorData, TensorPrimitive, Tolerance};

    use super::super::{default_cross_entropy, default_rms_norm_backward, default_rms_norm_saving, default_softmax, default_swiglu_backward, default_swiglu_saving, softmax_input_grad};
    use super::*;

    /// Rows of 1000 over 40 rows: several rayon tasks, the last one short.
    const SHAPE: [usize; 3] = [5, 8, 1000];

    fn random(shape: [usize; 3], std: f64) -> FloatTensor<Nd> {
        Tensor::<Nd, 3>::random(shape, Distribution::Normal(0.0, std), &Default::default()).into_primitive().tensor()
    }

    fn assert_close(a: FloatTensor<Nd>, b: FloatTensor<Nd>) {
        let (a, b) = (Tensor::<Nd, 3>::from_primitive(TensorPrimitive::Float(a)), Tensor::<Nd, 3>::from_primitive(TensorPrimitive::Float(b)));
        assert_eq!(a.dims(), b.dims());
        a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
    }

    /// `x` with the same values in a column-major layout (a transposed view made contiguous
    /// the other way), which the kernels copy before reading.
    fn strided(x: FloatTensor<Nd>) -> FloatTensor<Nd> {
        let t = Tensor::<Nd, 3>::from_primitive(TensorPrimitive::Float(x));
        let strided = t.swap_dims(0, 2).into_data().convert::<f32>();
        let back = Tensor::<Nd, 3>::from_data(strided, &Default::default()).swap_dims(0, 2);
        back.into_primitive().tensor()
    }

    #[test]
    fn softmax_and_its_backward_match_the_operations() {
        for x in [random(SHAPE, 3.0), strided(random(SHAPE, 3.0))] {
            let grad = random(SHAPE, 1.0);
            let y = Nd::fused_softmax(x.clone(), 2);
            assert_close(y.clone(), default_softmax::<Nd>(x.clone(), 2));
            assert_close(Nd::fused_softmax_backward(y.clone(), grad.clone(), 2), softmax_input_grad::<Nd>(y, grad, 2));
        }
        // Another dimension than the last takes the operations.
        let x = random(SHAPE, 3.0);
        assert_close(Nd::fused_softmax(x.clone(), 1), default_softmax::<Nd>(x, 1));
    }

    #[test]
    fn swiglu_matches_the_operations() {
        let (gate, up, grad) = (random(SHAPE, 3.0), strided(random(SHAPE, 1.0)), random(SHAPE, 1.0));
        let saved = Nd::fused_swiglu_saving(gate.clone(), up.clone());
        assert_close(Nd::fused_swiglu(gate.clone(), up.clone()), saved[0].clone());
        for (a, b) in saved.iter().zip(default_swiglu_saving::<Nd>(gate, up.clone())) {
            assert_close(a.clone(), b);
        }
        let [_, sigmoid, silu] = saved;
        for wanted in [[true, true], [true, false], [false, true], [false, false]] {
            let saved = [up.clone(), sigmoid.clone(), silu.clone()];
            let fused = Nd::fused_swiglu_backward(grad.clone(), saved.clone(), wanted);
            let operations = default_swiglu_backward::<Nd>(grad.clone(), saved, wanted);
            for (a, b) in fused.into_iter().zip(operations) {
                match (a, b) {
                    (Some(a), Some(b)) => assert_close(a, b),
                    (None, None) => {}
                    _ => panic!("a gradient present on one side only ({wanted:?})"),
                }
            }
        }
    }

    #[test]
    fn rms_norm_matches_the_operations() {
        let device = Default::default();
        let gamma = Tensor::<Nd, 1>::random([SHAPE[2]], Distribution::Normal(1.0, 0.5), &device).into_primitive().tensor();
        let (x, grad) = (strided(random(SHAPE, 2.0)), random(SHAPE, 1.0));
        let [y, normed, r] = Nd::fused_rms_norm_saving::<3>(x.clone(), gamma.clone(), 1e-5);
        let [y_ops, normed_ops, r_ops] = default_rms_norm_saving::<Nd, 3>(x.clone(), gamma.clone(), 1e-5);
        assert_close(Nd::fused_rms_norm::<3>(x, gamma.clone(), 1e-5), y.clone());
        assert_close(y, y_ops);
        assert_close(normed.clone(), normed_ops);
        assert_close(r.clone(), r_ops);
        let saved = [normed, r, gamma];
        let [d_x, d_gamma] = Nd::fused_rms_norm_backward::<3>(grad.clone(), saved.clone(), [true, true]);
        let [d_x_ops, d_gamma_ops] = default_rms_norm_backward::<Nd, 3>(grad.clone(), saved.clone(), [true, true]);
        assert_close(d_x.unwrap(), d_x_ops.unwrap());
        let as_1d = |t: FloatTensor<Nd>| Tensor::<Nd, 1>::from_primitive(TensorPrimitive::Float(t)).into_data();
        as_1d(d_gamma.unwrap()).assert_approx_eq::<f32>(&as_1d(d_gamma_ops.unwrap()), Tolerance::absolute(1e-3));
        assert!(matches!(Nd::fused_rms_norm_backward::<3>(grad, saved, [false, true]), [None, Some(_)]));
    }

    #[test]
    fn cross_entropy_matches_the_operations() {
        let device = Default::default();
        let (tokens, vocab) = (40, 1000);
        let logits = Tensor::<Nd, 2>::random([tokens, vocab], Distribution::Normal(0.0, 4.0), &device);
        let targets = Tensor::<Nd, 2, Int>::from_data(TensorData::new((0..tokens).map(|i| (i * 397 % vocab) as i64).collect::<Vec<_>>(), [tokens, 1]), &device);
        let weights = Tensor::<Nd, 2>::random([tokens, 1], Distribution::Uniform(0.0, 2.0), &device);
        let primitive = |t: Tensor<Nd, 2>| t.into_primitive().tensor();
        let fused = Nd::fused_cross_entropy(primitive(logits.clone()), targets.clone().into_primitive(), primitive(weights.clone()));
        let operations = default_cross_entropy::<Nd>(primitive(logits), targets.into_primitive(), primitive(weights));
        for (a, b) in fused.into_iter().zip(operations) {
            let (a, b) = (Tensor::<Nd, 2>::from_primitive(TensorPrimitive::Float(a)), Tensor::<Nd, 2>::from_primitive(TensorPrimitive::Float(b)));
            // Losses reach ~60, where an ulp is 4e-6: relative as well as absolute.
            a.into_data().assert_approx_eq::<f32>(&b.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        }
    }

    /// Contiguous, transposed, narrowed (an offset into the array) and broadcast operands against
    /// burn-ndarray's own product, and an empty inner dimension.
    #[test]
    fn strided_matmul_reads_views_in_place_and_matches_matmul() {
        let device = Default::default();
        let matrix = |rows, cols| Tensor::<Nd, 2>::random([rows, cols], Distribution::Normal(0.0, 1.0), &device);
        let (a, b, wide) = (matrix(70, 40), matrix(40, 90), matrix(90, 70));
        let cases = [
            (a.clone(), b.clone()),
            (b.clone().transpose(), a.clone().transpose()),
            (a.clone().narrow(0, 13, 30), wide.clone().narrow(1, 5, 60).transpose().narrow(0, 7, 40)),
            (a.clone().narrow(1, 3, 20), b.clone().narrow(0, 11, 20)),
            (Tensor::<Nd, 2>::ones([1, 40], &device).expand([6, 40]), b.clone()),
        ];
        let product = |lhs: Tensor<Nd, 2>, rhs: Tensor<Nd, 2>| Tensor::<Nd, 2>::from_primitive(TensorPrimitive::Float(Nd::strided_matmul(lhs.into_primitive().tensor(), rhs.into_primitive().tensor())));
        for (lhs, rhs) in cases {
            let expected = lhs.clone().matmul(rhs.clone());
            let got = product(lhs, rhs);
            assert_eq!(got.dims(), expected.dims());
            got.into_data().assert_approx_eq::<f32>(&expected.into_data(), Tolerance::rel_abs(1e-5, 1e-5));
        }
        // An empty sum is zero (burn-ndarray's own matmul divides by k there).
        let empty = product(Tensor::zeros([4, 0], &device), Tensor::zeros([0, 3], &device));
        empty.into_data().assert_eq(&Tensor::<Nd, 2>::zeros([4, 3], &device).into_data(), true);
    }

    /// The vector-instruction paths give the portable path's bits, sum included.
    #[test]
    fn exp_shifted_is_the_same_on_every_path() {
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 40.0).chain([f32::NEG_INFINITY, f32::NAN, -100.0]).collect();
        let (mut dispatched, mut portable) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        let (a, b) = (exp_shifted(&x, 3.0, &mut dispatched), exp_shifted_values(&x, 3.0, &mut portable));
        assert_eq!(a.to_bits(), b.to_bits());
        assert!(dispatched.iter().zip(&portable).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    /// `exp` against `f64`'s over the whole range it resolves, and at its ends.
    #[test]
    fn exp_is_within_two_ulp() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.3 + 175.3 * i as f32 / 2_000_000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64 - exact) / exact).abs());
        }
        assert!(worst < 2.0 * f32::EPSILON as f64, "relative error {worst:e}");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    /// A target outside the vocabulary is not read by the kernel: the operations run instead.
    #[test]
    fn out_of_range_targets_take_the_operations() {
        let device = Default::default();
        let targets = Tensor::<Nd, 2, Int>::from_ints([[0], [5]], &device).into_primitive();
        assert_eq!(target_indices(&targets, 5), None);
        let targets = Tensor::<Nd, 2, Int>::from_ints([[0], [4]], &device).into_primitive();
        assert_eq!(target_indices(&targets, 5), Some(vec![0, 4]));
    }
}
