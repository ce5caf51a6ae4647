//! [`QLinear`]: a frozen linear layer whose weight is stored in 4 bits on the device.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Element, Int, Tensor, TensorData, TensorPrimitive};
use peft_core::{Adaptable, Layer, LayerKind};

use crate::backend::{PackedWeight, QuantLinearBackend};
use crate::{QuantConfig, QuantError, QuantType, Quantized4bit, Result};

/// Sizes and format of a [`QLinear`].
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearMeta {
    /// Input features.
    pub d_input: usize,
    /// Output features.
    pub d_output: usize,
    /// Values per block.
    pub blocksize: usize,
    /// Codes per integer word on this backend.
    pub nibbles_per_word: usize,
    /// NF4 or FP4.
    pub quant_type: QuantType,
}

/// A frozen `Linear` with a 4-bit weight (bitsandbytes' format, PyTorch layout `[out, in]`).
///
/// The device holds the packed codes (4 bits per weight), one `f32` scale per block (double
/// quantization is resolved at load time) and the bias. Nothing trains.
#[derive(Module, Debug)]
pub struct QLinear<B: Backend> {
    /// Packed codes.
    pub words: Tensor<B, 1, Int>,
    /// Per-block scales (padded to whole blocks), in f32 on every backend: dequantization
    /// multiplies in f32 and rounds once to the compute type, as bitsandbytes does.
    pub absmax: Tensor<B, 1>,
    /// The 16 code values, in f32.
    pub code: Tensor<B, 1>,
    /// Bias `[d_output]`.
    pub bias: Option<Tensor<B, 1>>,
    /// Sizes and format.
    #[module(skip)]
    pub meta: QLinearMeta,
}

fn int_data<B: Backend>(values: Vec<u64>, nibbles_per_word: usize) -> TensorData {
    let n = values.len();
    match (<B::IntElem as Element>::dtype(), nibbles_per_word) {
        (DType::I64, _) => TensorData::new(values.into_iter().map(|v| v as i64).collect::<Vec<_>>(), [n]),
        _ => TensorData::new(values.into_iter().map(|v| v as u32 as i32).collect::<Vec<_>>(), [n]),
    }
}

impl<B: Backend> QLinear<B> {
    /// Builds the layer from a 4-bit weight `[d_output, d_input]` and an optional bias.
    pub fn from_quantized(q: &Quantized4bit, bias: Option<&[f32]>, device: &B::Device) -> Result<Self> {
        let [d_output, d_input] = q.state.shape[..] else {
            return Err(QuantError::CorruptState { name: "weight".into(), reason: format!("shape {:?} is not 2-D", q.state.shape) });
        };
        if let Some(b) = bias
            && b.len() != d_output
        {
            return Err(QuantError::CorruptState { name: "bias".into(), reason: format!("{} values for {d_output} outputs", b.len()) });
        }
        let nibbles_per_word = 2 * core::mem::size_of::<B::IntElem>().clamp(4, 8);
        let n = d_output * d_input;
        let blocks = n.div_ceil(q.state.blocksize);
        let codes: Vec<u8> = (0..blocks * q.state.blocksize)
            .map(|i| if i < n { if i % 2 == 0 { q.packed[i / 2] >> 4 } else { q.packed[i / 2] & 0x0f } } else { 0 })
            .collect();
        let words: Vec<u64> = codes
            .chunks(nibbles_per_word)
            .map(|c| c.iter().enumerate().fold(0u64, |w, (k, v)| w | (u64::from(*v) << (4 * (nibbles_per_word - 1 - k)))))
            .collect();
        let absmax = q.absmax();
        Ok(Self {
            words: Tensor::from_data(int_data::<B>(words, nibbles_per_word), device),
            absmax: Tensor::from_data(TensorData::new(absmax, [blocks]), (device, DType::F32)),
            code: Tensor::from_data(TensorData::new(q.state.code.to_vec(), [16]), (device, DType::F32)),
            bias: bias.map(|b| Tensor::from_data(TensorData::new(b.to_vec(), [d_output]), device)),
            meta: QLinearMeta { d_input, d_output, blocksize: q.state.blocksize, nibbles_per_word, quant_type: q.state.quant_type },
        })
    }

    /// Quantizes a Burn `Linear` (weight `[d_in, d_out]`) into a 4-bit layer.
    pub fn from_linear(linear: &Linear<B>, config: QuantConfig) -> Result<Self> {
        let [d_input, d_output] = linear.weight.dims();
        let device = linear.weight.device();
        let host = |t: Tensor<B, 2>| -> Vec<f32> { t.into_data().convert::<f32>().to_vec().expect("f32 data") };
        let weight = host(linear.weight.val().transpose());
        let q = Quantized4bit::quantize("weight", &weight, &[d_output, d_input], "float32", config)?;
        let bias = linear.bias.as_ref().map(|b| b.val().into_data().convert::<f32>().to_vec::<f32>().expect("f32 data"));
        Self::from_quantized(&q, bias.as_deref(), &device)
    }

    /// The packed weight as the backend operations take it (shares the device buffers).
    pub fn packed(&self) -> PackedWeight<B> {
        PackedWeight {
            words: self.words.clone().into_primitive(),
            absmax: self.absmax.clone().into_primitive().tensor(),
            code: self.code.clone().into_primitive().tensor(),
            rows: self.meta.d_output,
            cols: self.meta.d_input,
            blocksize: self.meta.blocksize,
            nibbles_per_word: self.meta.nibbles_per_word,
        }
    }

    /// Bytes held on the device: packed words, scales, code table and bias.
    pub fn device_bytes(&self) -> usize {
        let int_bytes = core::mem::size_of::<B::IntElem>();
        self.words.dims()[0] * int_bytes + 4 * (self.absmax.dims()[0] + 16 + self.bias.as_ref().map_or(0, |b| b.dims()[0]))
    }
}

impl<B: QuantLinearBackend> QLinear<B> {
    /// The dense weight in Burn's layout `[d_input, d_output]` (for merging and checks), by the
    /// backend's dequantization (the CubeCL kernel on GPU backends).
    pub fn dequantize(&self) -> Tensor<B, 2> {
        B::dequantize_packed(&self.packed()).transpose()
    }

    /// `[..., d_input] -> [..., d_output]`, dequantizing the weight for this product only.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x = x.reshape([rows, self.meta.d_input]).into_primitive().tensor();
        let y = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(B::packed_linear(x, self.packed())));
        let y = match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim::<2>(0),
            None => y,
        };
        let mut out = dims;
        out[D - 1] = self.meta.d_output;
        y.reshape(out)
    }
}

impl<B: QuantLinearBackend, const D: usize> Layer<B, Tensor<B, D>> for QLinear<B> {
    type Output = Tensor<B, D>;
    fn forward_base(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        self.forward(input)
    }
}

impl<B: Backend> Adaptable<B> for QLinear<B> {
    fn kind(&self) -> LayerKind {
        LayerKind::Linear
    }
    fn output_features(&self) -> Option<usize> {
        Some(self.meta.d_output)
    }
}
