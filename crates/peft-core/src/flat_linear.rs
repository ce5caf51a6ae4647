//! Dense products over all the tokens at once, where a weight gradient is computed.

use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;

/// `x·W (+ b)` for `x: [..., d_in]`, `weight: [d_in, d_out]`, `bias: [d_out]` → `[..., d_out]`,
/// with the leading dimensions flattened into rows first.
///
/// Burn 0.21's [`linear`] on a `[batch, seq, d_in]` input is a batched product with the weight
/// broadcast: the weight's gradient is then one product per batch row, summed afterwards. Over
/// `[batch·seq, d_in]` the forward pass and each gradient are one matrix product each, as in
/// torch's `nn.Linear`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use peft_core::flat_linear;
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 3>::ones([2, 3, 4], &device);
/// let weight = Tensor::<NdArray, 2>::ones([4, 5], &device);
/// let y = flat_linear(x, weight, None);
/// assert_eq!(y.dims(), [2, 3, 5]);
/// assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![4.0; 30]);
/// ```
pub fn flat_linear<B: Backend, const D: usize>(x: Tensor<B, D>, weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Tensor<B, D> {
    if D <= 2 {
        return linear(x, weight, bias);
    }
    let mut dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    dims[D - 1] = weight.dims()[1];
    linear(x.reshape([rows, d_in]), weight, bias).reshape(dims)
}

/// A [`Linear`] layer's forward pass, `[..., d_in] -> [..., d_out]`: through [`flat_linear`] when
/// its weight is trained (one product for the weight's gradient), through Burn's own forward pass
/// when it is frozen (measured faster then on burn-tch and burn-ndarray: docs/benchmarks.md).
pub fn linear_forward<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let weight = layer.weight.val();
    if weight.is_require_grad() {
        flat_linear(x, weight, layer.bias.as_ref().map(|b| b.val()))
    } else {
        layer.forward(x)
    }
}
