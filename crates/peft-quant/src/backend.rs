//! The 4-bit linear product as a backend operation, so that autodiff never keeps the dense weight.
//!
//! On a plain backend, [`QuantLinearBackend::packed_linear`] dequantizes the weight, multiplies,
//! and drops it. On [`Autodiff`], the recorded backward state is the packed weight itself: the
//! backward pass dequantizes again to compute `∂L/∂x = ∂L/∂y · W`, so between the forward and the
//! backward pass only 4-bit codes and scales are alive, one layer's dense weight at a time during
//! each pass. The frozen weight gets no gradient.

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{ElementConversion, Int, Tensor, TensorPrimitive};

use crate::fused::FusedOps;

/// A packed 4-bit weight `[rows, cols]` (PyTorch layout: `[out, in]`) on a backend.
///
/// `words` hold `nibbles_per_word` codes each, the first code in the highest nibble; `absmax` has
/// one scale per block of `blocksize` values of the flattened weight (padded to whole blocks).
#[derive(Clone, Debug)]
pub struct PackedWeight<B: Backend> {
    /// Packed codes.
    pub words: IntTensor<B>,
    /// Per-block scales, `[blocks]`, in f32 whatever the backend's float type.
    pub absmax: FloatTensor<B>,
    /// The 16 code values, in f32.
    pub code: FloatTensor<B>,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Values per block.
    pub blocksize: usize,
    /// Codes per integer word (8 for 32-bit integers, 16 for 64-bit).
    pub nibbles_per_word: usize,
}

/// The dense weight `[rows, cols]` of a packed weight, computed with tensor operations on `B`.
pub fn dequantize_weight<B: Backend>(w: &PackedWeight<B>) -> Tensor<B, 2> {
    let words = Tensor::<B, 1, Int>::from_primitive(w.words.clone());
    let device = words.device();
    let [n_words] = words.dims();
    let npw = w.nibbles_per_word;
    let shifts: Vec<i64> = (0..npw).rev().map(|k| 4 * k as i64).collect();
    let shifts = Tensor::<B, 1, Int>::from_data(burn::tensor::TensorData::new(shifts, [npw]), &device);
    let codes = words
        .unsqueeze_dim::<2>(1)
        .expand([n_words, npw])
        .bitwise_right_shift(shifts.unsqueeze_dim::<2>(0).expand([n_words, npw]))
        .bitwise_and_scalar(15i64.elem())
        .reshape([n_words * npw]);
    let absmax = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(w.absmax.clone()));
    let [blocks] = absmax.dims();
    let codes = codes.slice(0..blocks * w.blocksize);
    let values = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(w.code.clone())).select(0, codes);
    let values = values.reshape([blocks, w.blocksize]) * absmax.unsqueeze_dim::<2>(1);
    let dense = values.reshape([blocks * w.blocksize]).slice(0..w.rows * w.cols).reshape([w.rows, w.cols]);
    // The product above is in f32 (the scales' type); round once to the compute type.
    let dtype: burn::tensor::DType = burn::tensor::get_device_settings::<B>(&device).float_dtype.into();
    peft_core::in_dtype(dense, dtype)
}

/// Backends that run the 4-bit linear product `x·Wᵀ` (and the fused operations models train
/// with, [`FusedOps`]).
pub trait QuantLinearBackend: FusedOps {
    /// The dense weight `[rows, cols]`. Default: [`dequantize_weight`]'s tensor operations.
    fn dequantize_packed(w: &PackedWeight<Self>) -> Tensor<Self, 2> {
        dequantize_weight(w)
    }

    /// `x [n, cols] -> [n, rows]`.
    fn packed_linear(x: FloatTensor<Self>, w: PackedWeight<Self>) -> FloatTensor<Self> {
        let x = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(x));
        x.matmul(Self::dequantize_packed(&w).transpose()).into_primitive().tensor()
    }

    /// The input gradient `∂y [n, rows] -> ∂x = ∂y·W [n, cols]`.
    fn packed_linear_backward(grad: FloatTensor<Self>, w: &PackedWeight<Self>) -> FloatTensor<Self> {
        let grad = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(grad));
        grad.matmul(Self::dequantize_packed(w)).into_primitive().tensor()
    }
}

/// The CPU backend decodes on the host, tile by tile, inside the product (see `host.rs`).
#[cfg(feature = "ndarray")]
impl QuantLinearBackend for burn::backend::NdArray<f32> {
    fn dequantize_packed(w: &PackedWeight<Self>) -> Tensor<Self, 2> {
        with_host(w, |h| Tensor::from_data(burn::tensor::TensorData::new(h.decode_all(), [w.rows, w.cols]), &Default::default()))
    }

    fn packed_linear(x: FloatTensor<Self>, w: PackedWeight<Self>) -> FloatTensor<Self> {
        let x = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(x));
        let [n, _] = x.dims();
        let device = x.device();
        let x = x.into_data().to_vec::<f32>().expect("f32");
        let y = with_host(&w, |h| h.linear(&x, n));
        Tensor::<Self, 2>::from_data(burn::tensor::TensorData::new(y, [n, w.rows]), &device).into_primitive().tensor()
    }

    fn packed_linear_backward(grad: FloatTensor<Self>, w: &PackedWeight<Self>) -> FloatTensor<Self> {
        let grad = Tensor::<Self, 2>::from_primitive(TensorPrimitive::Float(grad));
        let [n, _] = grad.dims();
        let device = grad.device();
        let g = grad.into_data().to_vec::<f32>().expect("f32");
        let dx = with_host(w, |h| h.linear_backward(&g, n));
        Tensor::<Self, 2>::from_data(burn::tensor::TensorData::new(dx, [n, w.cols]), &device).into_primitive().tensor()
    }
}

#[cfg(feature = "ndarray")]
fn with_host<R>(w: &PackedWeight<burn::backend::NdArray<f32>>, f: impl FnOnce(&crate::host::HostWeight<'_>) -> R) -> R {
    type Nd = burn::backend::NdArray<f32>;
    let host = |t: FloatTensor<Nd>| Tensor::<Nd, 1>::from_primitive(TensorPrimitive::Float(t)).into_data().to_vec::<f32>().expect("f32");
    let (absmax, code) = (host(w.absmax.clone()), host(w.code.clone()));
    let words = Tensor::<Nd, 1, Int>::from_primitive(w.words.clone()).into_data();
    let words = words.as_slice::<i64>().expect("ndarray's words are i64");
    f(&crate::host::HostWeight { words, absmax: &absmax, code: &code, rows: w.rows, cols: w.cols, blocksize: w.blocksize })
}

/// Burn's portable CPU backend with f16 and bf16: dequantizes with tensor operations.
#[cfg(feature = "flex")]
impl QuantLinearBackend for burn::backend::Flex {}

/// libtorch's kernels under Burn: dequantizes with tensor operations.
#[cfg(feature = "tch")]
impl QuantLinearBackend for burn::backend::LibTorch<f32> {}

#[derive(Debug)]
struct PackedLinearBackward;

impl<B: QuantLinearBackend> Backward<B, 1> for PackedLinearBackward {
    type State = PackedWeight<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let weight = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::packed_linear_backward(grad, &weight)
        });
    }
}

impl<B: QuantLinearBackend, C: CheckpointStrategy> QuantLinearBackend for Autodiff<B, C> {
    fn packed_linear(x: FloatTensor<Self>, w: PackedWeight<Self>) -> FloatTensor<Self> {
        let inner = PackedWeight::<B> {
            words: w.words,
            absmax: w.absmax.primitive,
            code: w.code.primitive,
            rows: w.rows,
            cols: w.cols,
            blocksize: w.blocksize,
            nibbles_per_word: w.nibbles_per_word,
        };
        match PackedLinearBackward.prepare::<C>([x.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let output = B::packed_linear(x.primitive, inner.clone());
                prep.finish(inner, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::packed_linear(x.primitive, inner)),
        }
    }
}
