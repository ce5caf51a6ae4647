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

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, binary, unary};
use burn::nn::RmsNorm;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorPrimitive};

/// Backends with the operations of this module. Every backend has them through the defaults;
/// [`Autodiff`] overrides them with one backward node each.
pub trait FusedOps: Backend {
    /// Softmax over `dim`. Default: the backend's own softmax.
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        Self::softmax(x, dim)
    }

    /// `silu(gate)·up` elementwise. Default: `gate·sigmoid(gate)·up`.
    fn fused_swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(Self::float_mul(gate.clone(), Self::sigmoid(gate)), up)
    }

    /// RMSNorm over the last dimension of a rank-`D` tensor with weight `gamma [d]`: `x·r·γ`,
    /// `r = 1/√(mean(x²) + ε)`, the mean taken in f32. Default: Burn tensor operations.
    fn fused_rms_norm<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        rms_norm_parts::<Self, D>(float(x), float(gamma), epsilon).0.into_primitive().tensor()
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

#[derive(Debug)]
struct SoftmaxBackward;

impl<B: Backend> Backward<B, 1> for SoftmaxBackward {
    /// The output and the dimension.
    type State = (FloatTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (y, dim) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), dim);
            B::float_mul(y, B::float_sub(grad, dot))
        });
    }
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: Backend> Backward<B, 2> for SwigluBackward {
    /// `up`, `sigmoid(gate)` and `silu(gate)`.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (up, sigmoid, silu) = ops.state;
        let silu_for_up = silu.clone();
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            // silu'(g) = σ(g)·(1 + g·(1 − σ(g))) = σ + silu − silu·σ
            |grad| {
                let slope = B::float_sub(B::float_add(sigmoid.clone(), silu.clone()), B::float_mul(silu, sigmoid));
                B::float_mul(B::float_mul(grad, up), slope)
            },
            |grad| B::float_mul(grad, silu_for_up),
        );
    }
}

#[derive(Debug)]
struct RmsNormBackward<const D: usize>;

impl<B: Backend, const D: usize> Backward<B, 2> for RmsNormBackward<D> {
    /// `x̂`, `r` and `γ` ([`rms_norm_parts`]).
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let (normed, r, gamma) = ops.state;
        let (normed, r, gamma) = (float::<B, D>(normed), float::<B, D>(r), float::<B, 1>(gamma));
        let normed_for_gamma = normed.clone();
        binary::<B, _, _>(
            ops.parents,
            ops.node,
            grads,
            |grad| {
                let g = float::<B, D>(grad) * gamma.unsqueeze::<D>();
                let dot = (g.clone() * normed.clone()).mean_dim(D - 1);
                ((g - normed * dot) * r).into_primitive().tensor()
            },
            |grad| {
                let dims = normed_for_gamma.dims();
                let d = dims[D - 1];
                let rows = dims[..D - 1].iter().product::<usize>();
                (float::<B, D>(grad) * normed_for_gamma).reshape([rows, d]).sum_dim(0).reshape([d]).into_primitive().tensor()
            },
        );
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
                let sigmoid = B::sigmoid(gate.primitive.clone());
                let silu = B::float_mul(gate.primitive, sigmoid.clone());
                let y = B::float_mul(silu.clone(), up.primitive.clone());
                prep.finish((up.primitive, sigmoid, silu), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_swiglu(gate.primitive, up.primitive)),
        }
    }

    fn fused_rms_norm<const D: usize>(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        match RmsNormBackward::<D>.prepare::<C>([x.node.clone(), gamma.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (y, normed, r) = rms_norm_parts::<B, D>(float(x.primitive), float(gamma.primitive.clone()), epsilon);
                prep.finish((normed.into_primitive().tensor(), r.into_primitive().tensor(), gamma.primitive), y.into_primitive().tensor())
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_rms_norm::<D>(x.primitive, gamma.primitive, epsilon)),
        }
    }
}

#[cfg(feature = "ndarray")]
impl FusedOps for burn::backend::NdArray<f32> {}

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

    use super::{fused_rms_norm, fused_softmax, fused_swiglu};

    type Ad = Autodiff<NdArray>;

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
}
