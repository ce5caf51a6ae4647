//! A linear layer on the host, for the reparameterizations peft saves by their output (P-Tuning's
//! MLP, prefix tuning's `prefix_projection`): `f(x · weight + bias)` from an adapter's tensors in
//! Burn's layout (`weight [d_in, d_out]`), summed in `f64`.

use burn::tensor::TensorData;
use peft_core::{PeftError, Result};

use crate::folder::values_f32;

/// The function after the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    Identity,
    Relu,
    Tanh,
}

/// `activation(x · weight + bias)` for `x [rows, d_in]`; `name` names the layer in errors.
pub(crate) fn linear(x: &[f32], rows: usize, weight: &TensorData, bias: &TensorData, activation: Activation, name: &str) -> Result<Vec<f32>> {
    let [d_in, d_out]: [usize; 2] = weight.shape.to_vec().try_into().map_err(|_| PeftError::MissingTensor(format!("{name}.weight")))?;
    if x.len() != rows * d_in || bias.shape.to_vec() != [d_out] {
        return Err(PeftError::ShapeMismatch { name: format!("{name}.weight"), expected: vec![x.len() / rows.max(1), d_out], actual: vec![d_in, d_out] });
    }
    let (w, b) = (values_f32(weight), values_f32(bias));
    let mut out = Vec::with_capacity(rows * d_out);
    for r in 0..rows {
        for c in 0..d_out {
            let sum = f64::from(b[c]) + (0..d_in).map(|k| f64::from(x[r * d_in + k]) * f64::from(w[k * d_out + c])).sum::<f64>();
            out.push(match activation {
                Activation::Identity => sum as f32,
                Activation::Relu => (sum as f32).max(0.0),
                Activation::Tanh => sum.tanh() as f32,
            });
        }
    }
    Ok(out)
}
