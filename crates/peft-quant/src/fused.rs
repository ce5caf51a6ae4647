//! Operations given a backward pass of their own, where Burn 0.21's autodiff would otherwise
//! differentiate the small operations they are built from.
//!
//! Softmax: Burn's autodiff has no softmax node; it records the default decomposition (max, sub,
//! exp, sum, div) and differentiates each piece, about ten passes over the attention scores in
//! the backward pass and several intermediates kept alive until then. [`fused_softmax`] records
//! one node that keeps only the output `y` and computes `∂x = y·(∂y − Σ ∂y·y)`. On burn-tch the
//! forward pass is then libtorch's own softmax kernel.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// Backends with the operations of this module. Every backend has them through the defaults;
/// [`Autodiff`] overrides them with one backward node each.
pub trait FusedOps: Backend {
    /// Softmax over `dim`. Default: the backend's own softmax.
    fn fused_softmax(x: FloatTensor<Self>, dim: usize) -> FloatTensor<Self> {
        Self::softmax(x, dim)
    }
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
    use burn::tensor::activation::softmax;
    use burn::tensor::{Distribution, Tensor, Tolerance};

    use super::fused_softmax;

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
}
