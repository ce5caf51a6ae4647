//! Operations given a backward pass of their own, where Burn 0.21's autodiff would otherwise
//! differentiate the small operations they are built from.
//!
//! - Softmax: Burn's autodiff has no softmax node; it records the default decomposition (max,
//!   sub, exp, sum, div) and differentiates each piece, about ten passes over the attention
//!   scores in the backward pass and several intermediates kept alive until then.
//!   [`fused_softmax`] records one node that keeps only the output `y` and computes
//!   `∂x = y·(∂y − Σ ∂y·y)`. On burn-tch the forward pass is then libtorch's own softmax kernel.
//! - SwiGLU's `silu(gate)·up` ([`fused_swiglu`]): three nodes (sigmoid, two products) and an
//!   accumulated gradient for `gate` become one node.
//! - RMSNorm ([`fused_rms_norm`]): burn-nn's `RmsNorm` is seven recorded operations with two
//!   broadcasts; one node computes `∂x = r·(g − x̂·mean(g·x̂))` with `g = ∂y·γ`, `x̂ = x·r`, and
//!   `∂γ` only when `γ` is trained.
//! - Attention's core `softmax(q·kᵀ/√hd + bias)·v` ([`fused_attention`]): the decomposition keeps
//!   the probabilities `[batch, heads, seq, total]` of every layer until the backward pass (on
//!   SmolLM2-135M at 4 × 256 tokens, 283 MB) and, with grouped keys and values, copies of `k` and
//!   `v` repeated per query head. One node keeps `q`, `k`, `v` as they came and recomputes the
//!   probabilities in its backward pass (one product and one softmax more), as flash attention
//!   does.
//! - The fused loss's chunks ([`fused_cross_entropy`], [`strided_matmul`]): the loss and
//!   `∂logits` in one pass over a chunk's logits, outside autodiff (the caller routes the
//!   gradient), and the head's products reading transposed and narrowed operands where they lie
//!   (burn-ndarray's own matmul copies both operands first).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::nn::RmsNorm;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorPrimitive};

/// Backends with the operations of this module. Every backend has them through the defaults
/// (Burn tensor operations); [`Autodiff`] overrides the forward operations with one backward
/// node each, which calls the `*_saving` and `*_backward` methods of the backend underneath;
/// burn-ndarray overrides all but `fused_attention` with multi-threaded one-pass kernels
/// (`on_ndarray.rs`); its attention is the default, whose softmax is that kernel.
pub trait FusedOps: Backend {
    /// Softmax over `dim`. Default: the backend's own softmax.
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        default_softmax::<Self>(x, dim)
    }

    /// Softmax's backward pass from its output `y` and the output's gradient: `∂x = y·(∂y −
    /// Σ ∂y·y)`, the sum over `dim`.
    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        softmax_input_grad::<Self>(y, grad, dim)
    }

    /// `silu(gate)·up` elementwise. Default: `gate·sigmoid(gate)·up`.
    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        default_swiglu::<Self>(gate, up)
    }

    /// `silu(gate)·up` with what its backward pass needs: `[output, σ(gate), silu(gate)]`.
    fn fused_swiglu_saving(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> [FloatTensor<Self>; 3] {
        default_swiglu_saving::<Self>(gate, up)
    }

    /// The gradients `[∂gate, ∂up]` of `silu(gate)·up` (those `wanted`) from the output's
    /// gradient and `[up, σ(gate), silu(gate)]`.
    fn fused_swiglu_backward(grad: FloatTensor<Self>, saved: [FloatTensor<Self>; 3], wanted: [bool; 2]) -> [Option<FloatTensor<Self>>; 2] {
        default_swiglu_backward::<Self>(grad, saved, wanted)
    }

    /// RMSNorm over the last dimension of a rank-`D` tensor with weight `gamma [d]`: `x·r·γ`,
    /// `r = 1/√(mean(x²) + ε)`, the mean taken in f32. Default: Burn tensor operations.
    fn fused_rms_norm<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        default_rms_norm::<Self, D>(x, gamma, epsilon)
    }

    /// RMSNorm with what its backward pass needs: `[output, x̂ = x·r, r [..., 1]]`.
    fn fused_rms_norm_saving<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> [FloatTensor<Self>; 3] {
        default_rms_norm_saving::<Self, D>(x, gamma, epsilon)
    }

    /// The gradients `[∂x, ∂γ]` of RMSNorm (those `wanted`) from the output's gradient and
    /// `[x̂, r, γ]`: `∂x = r·(g − x̂·mean(g·x̂))` with `g = ∂y·γ`, `∂γ = Σ ∂y·x̂` over the rows.
    fn fused_rms_norm_backward<const D: usize>(grad: FloatTensor<Self>, saved: [FloatTensor<Self>; 3], wanted: [bool; 2]) -> [Option<FloatTensor<Self>>; 2] {
        default_rms_norm_backward::<Self, D>(grad, saved, wanted)
    }

    /// Scaled dot-product attention `softmax(q·kᵀ/√hd + bias)·v`. `q [batch, heads, seq, hd]`,
    /// `k`, `v [batch, kv_heads, total, hd]` (each kv head serves `heads / kv_heads` query heads),
    /// `bias` broadcast to the scores `[batch, heads, seq, total]`; returns `[batch, heads, seq,
    /// hd]`. Default: those operations, the softmax being [`FusedOps::fused_softmax`].
    fn fused_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        attention_output::<Self>(float(q), float(k), float(v), bias.map(float)).into_primitive().tensor()
    }

    /// Weighted cross-entropy of `logits [tokens, vocab]` against `targets [tokens, 1]` with
    /// `weights [tokens, 1]`, and its gradient: `[loss [tokens, 1], ∂logits [tokens, vocab]]`,
    /// `loss = w·(logsumexp(logits) − logits[target])`, `∂logits = w·(softmax(logits) −
    /// onehot(target))`. Not recorded by autodiff (the caller routes the gradient).
    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>, weights: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        default_cross_entropy::<Self>(logits, targets, weights)
    }

    /// `lhs [m, k]·rhs [k, n]`, either operand possibly a transposed or narrowed view, which a
    /// backend with a strided product reads where it lies. Default: the backend's matmul.
    fn strided_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }
}

fn float<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// RMSNorm's output `x̂·γ`, `x̂ = x·r` and `r = 1/√(mean(x²) + ε)` `[..., 1]`, the mean taken in
/// f32 as burn-nn's `RmsNorm` does (and multiplying by `r` as transformers' `LlamaRMSNorm` does).
fn rms_norm_parts<B: Backend, const D: usize>(x: Tensor<B, D>, gamma: Tensor<B, 1>, epsilon: f64) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let dtype = x.dtype();
    let r = (x.clone().cast(DType::F32).square().mean_dim(D - 1) + epsilon).sqrt().recip().cast(dtype);
    let normed = x * r.clone();
    (normed.clone() * gamma.unsqueeze::<D>(), normed, r)
}

/// `[batch, kv_heads, total, hd] -> [batch, heads, total, hd]`, each kv head repeated for the
/// `heads / kv_heads` query heads it serves.
fn repeat_kv<B: Backend>(t: Tensor<B, 4>, heads: usize) -> Tensor<B, 4> {
    let [batch, kv_heads, total, hd] = t.dims();
    if kv_heads == heads {
        return t;
    }
    t.unsqueeze_dim::<5>(2).expand([batch, kv_heads, heads / kv_heads, total, hd]).reshape([batch, heads, total, hd])
}

/// The gradient of [`repeat_kv`]: `[batch, heads, total, hd] -> [batch, kv_heads, total, hd]`,
/// summing over the query heads each kv head serves.
fn sum_kv_groups<B: Backend>(t: Tensor<B, 4>, kv_heads: usize) -> Tensor<B, 4> {
    let [batch, heads, total, hd] = t.dims();
    if kv_heads == heads {
        return t;
    }
    t.reshape([batch, kv_heads, heads / kv_heads, total, hd]).sum_dim(2).reshape([batch, kv_heads, total, hd])
}

/// `x/√hd`, `hd` the last dimension (the head's). Attention's scale multiplies `q` (`seq·hd`
/// values) rather than the scores (`seq·total`), the same result when `√hd` is a power of two
/// (`hd` = 16, 64, 256).
fn div_sqrt_head_dim<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let hd = x.dims()[3];
    x.div_scalar((hd as f64).sqrt())
}

/// `softmax(q_scaled·kᵀ + bias)` `[batch, heads, seq, total]`, `k` repeated per query head.
fn attention_probabilities<B: FusedOps>(q_scaled: Tensor<B, 4>, k: Tensor<B, 4>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let scores = q_scaled.matmul(k.swap_dims(2, 3));
    fused_softmax(if let Some(bias) = bias { scores + bias } else { scores }, 3)
}

/// `softmax(q·kᵀ/√hd + bias)·v` by the operations ([`FusedOps::fused_attention`]'s shapes).
fn attention_output<B: FusedOps>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let heads = q.dims()[1];
    attention_probabilities(div_sqrt_head_dim(q), repeat_kv(k, heads), bias).matmul(repeat_kv(v, heads))
}

/// Softmax over `dim` with one backward node on [`Autodiff`]; the same values as
/// [`burn::tensor::activation::softmax`].
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use peft_quant::fused::fused_softmax;
///
/// let device = Default::default();
/// let x = Tensor::<Autodiff<NdArray>, 2>::from_floats([[0.0, 0.0], [0.0, 2.0f32.ln()]], &device).require_grad();
/// let y = fused_softmax(x.clone(), 1);
/// y.clone().into_data().assert_approx_eq::<f32>(&Tensor::<Autodiff<NdArray>, 2>::from_floats([[0.5, 0.5], [1.0 / 3.0, 2.0 / 3.0]], &device).into_data(), Default::default());
/// // Σ y = 1 along the row, so the gradient of Σ y is zero.
/// let grads = y.sum().backward();
/// assert!(x.grad(&grads).unwrap().abs().max().into_scalar() < 1e-6);
/// ```
pub fn fused_softmax<B: FusedOps, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::fused_softmax(x.into_primitive().tensor(), dim)))
}

/// `silu(gate)·up` with one backward node on [`Autodiff`]; the same values as
/// `silu(gate) * up`. Shapes: `gate`, `up` and the output alike.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use peft_quant::fused::fused_swiglu;
///
/// let device = Default::default();
/// let gate = Tensor::<Autodiff<NdArray>, 1>::from_floats([0.0, 1.0], &device).require_grad();
/// let up = Tensor::<Autodiff<NdArray>, 1>::from_floats([3.0, 2.0], &device);
/// let y = fused_swiglu(gate.clone(), up);
/// let sigmoid1 = 1.0 / (1.0 + (-1.0f32).exp());
/// y.clone().into_data().assert_approx_eq::<f32>(&Tensor::<Autodiff<NdArray>, 1>::from_floats([0.0, 2.0 * sigmoid1], &device).into_data(), Default::default());
/// // silu'(0) = 1/2.
/// let grads = y.sum().backward();
/// assert!((gate.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap()[0] - 1.5).abs() < 1e-6);
/// ```
pub fn fused_swiglu<B: FusedOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    float(B::fused_swiglu(gate.into_primitive().tensor(), up.into_primitive().tensor()))
}

/// burn-nn's [`RmsNorm`] forward pass, `[..., d] -> [..., d]`, with one backward node on
/// [`Autodiff`].
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::RmsNormConfig;
/// use burn::tensor::Tensor;
/// use peft_quant::fused::fused_rms_norm;
///
/// let device = Default::default();
/// let norm = RmsNormConfig::new(2).with_epsilon(1e-12).init::<NdArray>(&device);
/// let y = fused_rms_norm(&norm, Tensor::<NdArray, 2>::from_floats([[3.0, 4.0]], &device));
/// // mean(x²) = 12.5, ε negligible
/// y.into_data().assert_approx_eq::<f32>(&Tensor::<NdArray, 2>::from_floats([[3.0 / 12.5f32.sqrt(), 4.0 / 12.5f32.sqrt()]], &device).into_data(), Default::default());
/// ```
pub fn fused_rms_norm<B: FusedOps, const D: usize>(norm: &RmsNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    float(B::fused_rms_norm::<D>(x.into_primitive().tensor(), norm.gamma.val().into_primitive().tensor(), norm.epsilon))
}

/// Scaled dot-product attention `softmax(q·kᵀ/√hd + bias)·v` with one backward node on
/// [`Autodiff`] that keeps `q`, `k` and `v` and recomputes the probabilities. `q [batch, heads,
/// seq, hd]`, `k`, `v [batch, kv_heads, total, hd]` (each kv head serves `heads / kv_heads` query
/// heads), `bias` (a mask: it gets no gradient unless it is tracked itself, when the decomposed
/// operations run instead) broadcast to `[batch, heads, seq, total]`. Returns `[batch, heads,
/// seq, hd]`.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use peft_quant::fused::fused_attention;
///
/// let device = Default::default();
/// // One query, two keys with equal scores: the output is the mean of the two values.
/// let q = Tensor::<Autodiff<NdArray>, 4>::from_floats([[[[1.0, 0.0]]]], &device);
/// let k = Tensor::<Autodiff<NdArray>, 4>::from_floats([[[[1.0, 1.0], [1.0, -1.0]]]], &device);
/// let v = Tensor::<Autodiff<NdArray>, 4>::from_floats([[[[2.0, 0.0], [0.0, 4.0]]]], &device).require_grad();
/// let out = fused_attention(q, k, v.clone(), None);
/// out.clone().into_data().assert_approx_eq::<f32>(&Tensor::<Autodiff<NdArray>, 4>::from_floats([[[[1.0, 2.0]]]], &device).into_data(), Default::default());
/// // ∂Σout/∂v = the probabilities, 1/2 each.
/// let grads = out.sum().backward();
/// v.grad(&grads).unwrap().into_data().assert_approx_eq::<f32>(&Tensor::<NdArray, 4>::from_floats([[[[0.5, 0.5], [0.5, 0.5]]]], &device).into_data(), Default::default());
/// ```
pub fn fused_attention<B: FusedOps>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, bias: Option<Tensor<B, 4>>) -> Tensor<B, 4> {
    let primitive = |t: Tensor<B, 4>| t.into_primitive().tensor();
    float(B::fused_attention(primitive(q), primitive(k), primitive(v), bias.map(primitive)))
}

/// Weighted cross-entropy of `logits [tokens, vocab]` against `targets [tokens, 1]` with
/// `weights [tokens, 1]`, and its gradient, in one pass over the logits where the backend has a
/// kernel for it (burn-ndarray): `(loss [tokens, 1], ∂logits [tokens, vocab])` with `loss =
/// w·(logsumexp(logits) − logits[target])` and `∂logits = w·(softmax(logits) −
/// onehot(target))`. Neither is recorded by autodiff: the caller hands the gradient on (as
/// peft-train's fused head and loss do).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use peft_quant::fused::fused_cross_entropy;
///
/// let device = Default::default();
/// let logits = Tensor::<NdArray, 2>::from_floats([[0.0, 0.0]], &device);
/// let targets = Tensor::<NdArray, 2, Int>::from_ints([[1]], &device);
/// let weights = Tensor::<NdArray, 2>::from_floats([[2.0]], &device);
/// let (loss, grad) = fused_cross_entropy(logits, targets, weights);
/// // Two equal logits: −log p(target) = ln 2, and w·(softmax − onehot) = 2·([½, ½] − [0, 1]).
/// assert!((loss.into_scalar() - 2.0 * 2.0f32.ln()).abs() < 1e-6);
/// grad.into_data().assert_approx_eq::<f32>(&Tensor::<NdArray, 2>::from_floats([[1.0, -1.0]], &device).into_data(), Default::default());
/// ```
pub fn fused_cross_entropy<B: FusedOps>(logits: Tensor<B, 2>, targets: Tensor<B, 2, Int>, weights: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [loss, grad] = B::fused_cross_entropy(logits.into_primitive().tensor(), targets.into_primitive(), weights.into_primitive().tensor());
    (float(loss), float(grad))
}

/// `lhs [m, k]·rhs [k, n]`, the same value as [`Tensor::matmul`]. On burn-ndarray a transposed
/// or narrowed operand is read where it lies (burn-ndarray's matmul copies both operands) by
/// the `gemm` crate's SGEMM; on [`Autodiff`] a product with a tracked operand is Burn's own,
/// so gradients are unchanged.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use peft_quant::fused::strided_matmul;
///
/// let device = Default::default();
/// let a = Tensor::<NdArray, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
/// let b = Tensor::<NdArray, 2>::from_floats([[5.0, 6.0], [7.0, 8.0]], &device);
/// // aᵀ·b without copying aᵀ.
/// let product = strided_matmul(a.transpose(), b);
/// product.into_data().assert_eq(&Tensor::<NdArray, 2>::from_floats([[26.0, 30.0], [38.0, 44.0]], &device).into_data(), true);
/// ```
pub fn strided_matmul<B: FusedOps>(lhs: Tensor<B, 2>, rhs: Tensor<B, 2>) -> Tensor<B, 2> {
    float(B::strided_matmul(lhs.into_primitive().tensor(), rhs.into_primitive().tensor()))
}

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: FusedOps> Backward<B, 1> for SoftmaxBackward {
    /// The output and the dimension.
    type State = (FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (y, dim) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| B::fused_softmax_backward(y, grad, dim));
    }
}

/// Softmax's backward pass from its output `y` and the output's gradient: `∂x = y·(∂y − Σ ∂y·y)`,
/// the sum over `dim`.
fn softmax_input_grad<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>, dim: usize) -> FloatTensor<B> {
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), dim);
    B::float_mul(y, B::float_sub(grad, dot))
}

fn default_softmax<B: Backend>(x: FloatTensor<B>, dim: usize) -> FloatTensor<B> {
    B::softmax(x, dim)
}

fn default_swiglu<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(B::float_mul(gate.clone(), B::sigmoid(gate)), up)
}

fn default_swiglu_saving<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> [FloatTensor<B>; 3] {
    let sigmoid = B::sigmoid(gate.clone());
    let silu = B::float_mul(gate, sigmoid.clone());
    [B::float_mul(silu.clone(), up), sigmoid, silu]
}

fn default_swiglu_backward<B: Backend>(grad: FloatTensor<B>, saved: [FloatTensor<B>; 3], wanted: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
    let [up, sigmoid, silu] = saved;
    let d_up = wanted[1].then(|| B::float_mul(grad.clone(), silu.clone()));
    // silu'(g) = σ(g)·(1 + g·(1 − σ(g))) = σ + silu − silu·σ
    let d_gate = wanted[0].then(|| {
        let slope = B::float_sub(B::float_add(sigmoid.clone(), silu.clone()), B::float_mul(silu, sigmoid));
        B::float_mul(B::float_mul(grad, up), slope)
    });
    [d_gate, d_up]
}

fn default_rms_norm<B: Backend, const D: usize>(x: FloatTensor<B>, gamma: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    rms_norm_parts::<B, D>(float(x), float(gamma), epsilon).0.into_primitive().tensor()
}

fn default_rms_norm_saving<B: Backend, const D: usize>(x: FloatTensor<B>, gamma: FloatTensor<B>, epsilon: f64) -> [FloatTensor<B>; 3] {
    let (y, normed, r) = rms_norm_parts::<B, D>(float(x), float(gamma), epsilon);
    [y, normed, r].map(|t| t.into_primitive().tensor())
}

fn default_rms_norm_backward<B: Backend, const D: usize>(grad: FloatTensor<B>, saved: [FloatTensor<B>; 3], wanted: [bool; 2]) -> [Option<FloatTensor<B>>; 2] {
    let [normed, r, gamma] = saved;
    let (grad, normed, r, gamma) = (float::<B, D>(grad), float::<B, D>(normed), float::<B, D>(r), float::<B, 1>(gamma));
    let d_gamma = wanted[1].then(|| {
        let dims = normed.dims();
        let d = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        (grad.clone() * normed.clone()).reshape([rows, d]).sum_dim(0).reshape([d]).into_primitive().tensor()
    });
    let d_x = wanted[0].then(|| {
        let g = grad * gamma.unsqueeze::<D>();
        let dot = (g.clone() * normed.clone()).mean_dim(D - 1);
        ((g - normed * dot) * r).into_primitive().tensor()
    });
    [d_x, d_gamma]
}

fn default_cross_entropy<B: Backend>(logits: FloatTensor<B>, targets: IntTensor<B>, weights: FloatTensor<B>) -> [FloatTensor<B>; 2] {
    let (logits, weight) = (float::<B, 2>(logits), float::<B, 2>(weights));
    let targets = Tensor::<B, 2, Int>::from_primitive(targets);
    let max = logits.clone().max_dim(1);
    let exp = (logits.clone() - max.clone()).exp();
    let total = exp.clone().sum_dim(1);
    let picked = logits.gather(1, targets.clone());
    let loss = (max + total.clone().log() - picked) * weight.clone();
    let grad = (exp * (weight.clone() / total)).scatter(1, targets, weight.neg(), IndexingUpdateOp::Add);
    [loss, grad].map(|t| t.into_primitive().tensor())
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: FusedOps> Backward<B, 2> for SwigluBackward {
    /// `up`, `sigmoid(gate)` and `silu(gate)`.
    type State = [FloatTensor<B>; 3];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let gradients = B::fused_swiglu_backward(grad, ops.state, wanted(&ops.parents));
        register_pair(ops.parents, gradients, |node, gradient| grads.register::<B>(node.id, gradient));
    }
}

/// Which of a node's two parents take a gradient.
fn wanted<N>(parents: &[Option<N>; 2]) -> [bool; 2] {
    parents.each_ref().map(Option::is_some)
}

/// Hands each parent that takes a gradient its gradient.
fn register_pair<N, G>(parents: [Option<N>; 2], gradients: [Option<G>; 2], mut register: impl FnMut(N, G)) {
    for (node, gradient) in parents.into_iter().zip(gradients) {
        if let (Some(node), Some(gradient)) = (node, gradient) {
            register(node, gradient);
        }
    }
}

#[derive(Debug)]
struct RmsNormBackward<const D: usize>;

impl<B: FusedOps, const D: usize> Backward<B, 2> for RmsNormBackward<D> {
    /// `x̂`, `r` and `γ` ([`FusedOps::fused_rms_norm_saving`]).
    type State = [FloatTensor<B>; 3];

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let gradients = B::fused_rms_norm_backward::<D>(grad, ops.state, wanted(&ops.parents));
        register_pair(ops.parents, gradients, |node, gradient| grads.register::<B>(node.id, gradient));
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: FusedOps> Backward<B, 3> for AttentionBackward {
    /// `q`, `k`, `v` and the bias.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad = float::<B, 4>(grads.consume::<B>(&ops.node));
        let (q, k, v, bias) = ops.state;
        let (q, k, v) = (float::<B, 4>(q), float::<B, 4>(k), float::<B, 4>(v));
        let (heads, kv_heads) = (q.dims()[1], k.dims()[1]);
        let (q, k) = (div_sqrt_head_dim(q), repeat_kv(k, heads));
        let p = attention_probabilities(q.clone(), k.clone(), bias.map(float));
        if let Some(node) = node_v {
            let dv = sum_kv_groups(p.clone().swap_dims(2, 3).matmul(grad.clone()), kv_heads);
            grads.register::<B>(node.id, dv.into_primitive().tensor());
        }
        if node_q.is_none() && node_k.is_none() {
            return;
        }
        let dp = grad.matmul(repeat_kv(v, heads).swap_dims(2, 3));
        let ds = float::<B, 4>(B::fused_softmax_backward(p.into_primitive().tensor(), dp.into_primitive().tensor(), 3));
        if let Some(node) = node_k {
            let dk = sum_kv_groups(ds.clone().swap_dims(2, 3).matmul(q), kv_heads);
            grads.register::<B>(node.id, dk.into_primitive().tensor());
        }
        if let Some(node) = node_q {
            grads.register::<B>(node.id, div_sqrt_head_dim(ds.matmul(k)).into_primitive().tensor());
        }
    }
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        match SoftmaxBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::fused_softmax(x.primitive, dim);
                prep.finish((y.clone(), dim), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_softmax(x.primitive, dim)),
        }
    }

    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward.prepare::<C>([gate.node.clone(), up.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [y, sigmoid, silu] = B::fused_swiglu_saving(gate.primitive, up.primitive.clone());
                prep.finish([up.primitive, sigmoid, silu], y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_swiglu(gate.primitive, up.primitive)),
        }
    }

    fn fused_rms_norm<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        match RmsNormBackward::<D>.prepare::<C>([x.node.clone(), gamma.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [y, normed, r] = B::fused_rms_norm_saving::<D>(x.primitive, gamma.primitive.clone(), epsilon);
                prep.finish([normed, r, gamma.primitive], y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_rms_norm::<D>(x.primitive, gamma.primitive, epsilon)),
        }
    }

    fn fused_attention(q: FloatTensor<Self>, k: FloatTensor<Self>, v: FloatTensor<Self>, bias: Option<FloatTensor<Self>>) -> FloatTensor<Self> {
        if bias.as_ref().is_some_and(|bias| !bias.node.requirement.is_none()) {
            return attention_output::<Self>(float(q), float(k), float(v), bias.map(float)).into_primitive().tensor();
        }
        let bias = bias.map(|bias| bias.primitive);
        match AttentionBackward.prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::fused_attention(q.primitive.clone(), k.primitive.clone(), v.primitive.clone(), bias.clone());
                prep.finish((q.primitive, k.primitive, v.primitive, bias), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(q.primitive, k.primitive, v.primitive, bias)),
        }
    }

    fn fused_cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>, weights: FloatTensor<Self>) -> [FloatTensor<Self>; 2] {
        B::fused_cross_entropy(logits.primitive, targets, weights.primitive).map(Self::from_inner)
    }

    fn strided_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        if lhs.node.requirement.is_none() && rhs.node.requirement.is_none() {
            Self::from_inner(B::strided_matmul(lhs.primitive, rhs.primitive))
        } else {
            Self::float_matmul(lhs, rhs)
        }
    }
}

#[cfg(feature = "ndarray")]
mod on_ndarray;

#[cfg(feature = "flex")]
impl FusedOps for burn::backend::Flex {}

#[cfg(feature = "tch")]
impl FusedOps for burn::backend::LibTorch<f32> {}

#[cfg(feature = "cubecl")]
impl<R: burn_cubecl::CubeRuntime, F: burn_cubecl::FloatElement, I: burn_cubecl::IntElement, BT: burn_cubecl::element::BoolElement> FusedOps
    for burn_cubecl::CubeBackend<R, F, I, BT>
{
}

#[cfg(feature = "cubecl")]
impl<B: burn_fusion::FusionBackend + FusedOps> FusedOps for burn_fusion::Fusion<B> {}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::{Autodiff, NdArray};
    use burn::module::{Module, Param};
    use burn::nn::RmsNormConfig;
    use burn::tensor::activation::{silu, softmax};
    use burn::tensor::{Distribution, Tensor, Tolerance};

    use super::{fused_attention, fused_rms_norm, fused_softmax, fused_swiglu, strided_matmul};

    type Ad = Autodiff<NdArray>;

    /// The product equals Burn's, untracked (the inner backend's kernel) and tracked (Burn's
    /// own product, gradients included).
    #[test]
    fn strided_matmul_matches_matmul_and_keeps_gradients() {
        let device = Default::default();
        let a = Tensor::<Ad, 2>::random([7, 5], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<Ad, 2>::random([7, 3], Distribution::Normal(0.0, 1.0), &device);
        let expected = a.clone().transpose().matmul(b.clone());
        strided_matmul(a.clone().transpose(), b.clone()).into_data().assert_approx_eq::<f32>(&expected.clone().into_data(), Tolerance::rel_abs(1e-5, 1e-6));
        let (tracked, reference) = (a.clone().require_grad(), a.require_grad());
        let grads = strided_matmul(tracked.clone().transpose(), b.clone()).sum().backward();
        let reference_grads = reference.clone().transpose().matmul(b).sum().backward();
        tracked.grad(&grads).unwrap().into_data().assert_approx_eq::<f32>(&reference.grad(&reference_grads).unwrap().into_data(), Tolerance::absolute(1e-6));
    }

    /// Values and gradients equal Burn's decomposed softmax, for a weighted sum (so that the
    /// gradient is not trivially zero) over every dimension of a 3-D tensor.
    #[test]
    fn matches_decomposed_softmax() {
        let device = Default::default();
        let x = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 2.0), &device);
        let w = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        for dim in 0..3 {
            let (a, b) = (x.clone().require_grad(), x.clone().require_grad());
            let (ya, yb) = (fused_softmax(a.clone(), dim), softmax(b.clone(), dim));
            ya.clone().into_data().assert_approx_eq::<f32>(&yb.clone().into_data(), Tolerance::absolute(1e-6));
            let (ga, gb) = ((ya * w.clone()).sum().backward(), (yb * w.clone()).sum().backward());
            a.grad(&ga).unwrap().into_data().assert_approx_eq::<f32>(&b.grad(&gb).unwrap().into_data(), Tolerance::absolute(1e-6));
        }
    }

    /// A `-inf` input (a masked position) gets probability 0 and gradient 0.
    #[test]
    fn masked_positions_get_no_gradient() {
        let device = Default::default();
        let x = Tensor::<Ad, 2>::from_floats([[1.0, f32::NEG_INFINITY, 0.5]], &device).require_grad();
        let y = fused_softmax(x.clone(), 1);
        let grads = (y.clone() * Tensor::from_floats([[1.0, 2.0, 3.0]], &device)).sum().backward();
        assert_eq!(y.into_data().to_vec::<f32>().unwrap()[1], 0.0);
        assert_eq!(x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap()[1], 0.0);
    }

    /// Values and both gradients equal `silu(gate) * up` differentiated by Burn.
    #[test]
    fn swiglu_matches_decomposition() {
        let device = Default::default();
        let gate = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 2.0), &device);
        let up = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        let (ga, ua) = (gate.clone().require_grad(), up.clone().require_grad());
        let (gb, ub) = (gate.require_grad(), up.require_grad());
        let (ya, yb) = (fused_swiglu(ga.clone(), ua.clone()), silu(gb.clone()) * ub.clone());
        ya.clone().into_data().assert_approx_eq::<f32>(&yb.clone().into_data(), Tolerance::absolute(1e-6));
        let (da, db) = ((ya * w.clone()).sum().backward(), (yb * w).sum().backward());
        for (a, b) in [(ga, gb), (ua, ub)] {
            a.grad(&da).unwrap().into_data().assert_approx_eq::<f32>(&b.grad(&db).unwrap().into_data(), Tolerance::absolute(1e-5));
        }
    }

    /// Values and gradients equal burn-nn's `RmsNorm` differentiated by Burn, with `γ` trained
    /// and with `γ` frozen (then it gets no gradient).
    #[test]
    fn rms_norm_matches_burn_nn() {
        let device = Default::default();
        let mut norm = RmsNormConfig::new(5).with_epsilon(1e-5).init::<Ad>(&device);
        norm.gamma = Param::from_tensor(Tensor::random([5], Distribution::Normal(1.0, 0.5), &device));
        let x = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 2.0), &device);
        let w = Tensor::<Ad, 3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &device);
        for trained in [true, false] {
            let norm = if trained { norm.clone() } else { norm.clone().no_grad() };
            let (a, b) = (x.clone().require_grad(), x.clone().require_grad());
            let (ya, yb) = (fused_rms_norm(&norm, a.clone()), norm.forward(b.clone()));
            ya.clone().into_data().assert_approx_eq::<f32>(&yb.clone().into_data(), Tolerance::absolute(1e-5));
            let (da, db) = ((ya * w.clone()).sum().backward(), (yb * w.clone()).sum().backward());
            a.grad(&da).unwrap().into_data().assert_approx_eq::<f32>(&b.grad(&db).unwrap().into_data(), Tolerance::absolute(1e-5));
            let gamma = norm.gamma.val();
            match (gamma.grad(&da), gamma.grad(&db)) {
                (Some(ga), Some(gb)) => ga.into_data().assert_approx_eq::<f32>(&gb.into_data(), Tolerance::absolute(1e-5)),
                (None, None) => assert!(!trained),
                _ => panic!("γ's gradient present in only one of the two"),
            }
        }
    }

    /// Burn's own operations for `softmax(q·kᵀ/√hd + bias)·v`, kv heads repeated per query head.
    fn decomposed_attention(q: Tensor<Ad, 4>, k: Tensor<Ad, 4>, v: Tensor<Ad, 4>, bias: Option<Tensor<Ad, 4>>) -> Tensor<Ad, 4> {
        let [batch, heads, _, hd] = q.dims();
        let [_, kv_heads, total, _] = k.dims();
        let repeat = |t: Tensor<Ad, 4>| t.unsqueeze_dim::<5>(2).expand([batch, kv_heads, heads / kv_heads, total, hd]).reshape([batch, heads, total, hd]);
        let scores = q.matmul(repeat(k).swap_dims(2, 3)) / (hd as f64).sqrt();
        softmax(if let Some(bias) = bias { scores + bias } else { scores }, 3).matmul(repeat(v))
    }

    /// Values and the gradients of `q`, `k` and `v` equal the decomposition's, with grouped kv
    /// heads (4 query heads on 2), two prefix positions (`total` > `seq`) and a causal bias; and
    /// with a trained bias, which then gets its gradient too.
    #[test]
    fn attention_matches_decomposition() {
        let device = Default::default();
        let (batch, heads, kv_heads, seq, total, hd) = (2, 4, 2, 3, 5, 4);
        let q = Tensor::<Ad, 4>::random([batch, heads, seq, hd], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<Ad, 4>::random([batch, kv_heads, total, hd], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<Ad, 4>::random([batch, kv_heads, total, hd], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<Ad, 4>::random([batch, heads, seq, hd], Distribution::Normal(0.0, 1.0), &device);
        let causal: Vec<f32> = (0..seq).flat_map(|i| (0..total).map(move |j| if j > i + total - seq { -1e9 } else { 0.0 })).collect();
        let causal = Tensor::<Ad, 1>::from_floats(causal.as_slice(), &device).reshape([1, 1, seq, total]);
        let random_bias = Tensor::<Ad, 4>::random([batch, 1, seq, total], Distribution::Normal(0.0, 1.0), &device);
        for (bias, trained) in [(None, false), (Some(causal), false), (Some(random_bias), true)] {
            let bias = bias.map(|b: Tensor<Ad, 4>| if trained { b.require_grad() } else { b });
            let track = |t: &Tensor<Ad, 4>| t.clone().require_grad();
            let (qa, ka, va) = (track(&q), track(&k), track(&v));
            let (qb, kb, vb) = (track(&q), track(&k), track(&v));
            let ya = fused_attention(qa.clone(), ka.clone(), va.clone(), bias.clone());
            let yb = decomposed_attention(qb.clone(), kb.clone(), vb.clone(), bias.clone());
            ya.clone().into_data().assert_approx_eq::<f32>(&yb.clone().into_data(), Tolerance::absolute(1e-5));
            let (da, db) = ((ya * w.clone()).sum().backward(), (yb * w.clone()).sum().backward());
            for (a, b) in [(qa, qb), (ka, kb), (va, vb)] {
                a.grad(&da).unwrap().into_data().assert_approx_eq::<f32>(&b.grad(&db).unwrap().into_data(), Tolerance::absolute(1e-5));
            }
            if let Some(bias) = bias.filter(|_| trained) {
                bias.grad(&da).unwrap().into_data().assert_approx_eq::<f32>(&bias.grad(&db).unwrap().into_data(), Tolerance::absolute(1e-5));
            }
        }
    }
}
