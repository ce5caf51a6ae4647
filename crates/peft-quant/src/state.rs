//! A 4-bit weight with its quant state, double quantization included.

use crate::blockwise::{check_blocksize, dequantize_4bit, dequantize_8bit, quantize_4bit, quantize_8bit};
use crate::{DYNAMIC_MAP, QuantError, QuantType, Result};

/// Block size of the second quantization (of the absmax values).
pub const NESTED_BLOCKSIZE: usize = 256;

/// How the per-block absmax values are stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Absmax {
    /// One `f32` per block.
    Plain(Vec<f32>),
    /// Double quantization: `absmax − offset` quantized to 8 bits in blocks of 256 with the
    /// dynamic map.
    Double {
        /// 8-bit codes, one per block.
        codes: Vec<u8>,
        /// One `f32` per 256 blocks.
        nested_absmax: Vec<f32>,
        /// The 8-bit map (256 values).
        nested_map: Vec<f32>,
        /// Block size of the second quantization.
        nested_blocksize: usize,
        /// The mean subtracted before quantizing.
        offset: f32,
    },
}

/// Everything needed to dequantize a 4-bit weight, as bitsandbytes' `QuantState`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantState {
    /// NF4 or FP4.
    pub quant_type: QuantType,
    /// Values per block.
    pub blocksize: usize,
    /// The weight's shape.
    pub shape: Vec<usize>,
    /// The weight's original dtype (`float32`, `bfloat16`, `float16`).
    pub dtype: String,
    /// The 16 code values (bitsandbytes' `quant_map`).
    pub code: [f32; 16],
    /// The per-block scales.
    pub absmax: Absmax,
}

/// A packed 4-bit weight and its state.
#[derive(Clone, Debug, PartialEq)]
pub struct Quantized4bit {
    /// `ceil(n/2)` bytes, element `2i` in the high nibble.
    pub packed: Vec<u8>,
    /// How to dequantize.
    pub state: QuantState,
}

/// Settings of [`Quantized4bit::quantize`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantConfig {
    /// NF4 or FP4.
    pub quant_type: QuantType,
    /// Values per block (a power of two from 32 to 4096; bitsandbytes' default is 64).
    pub blocksize: usize,
    /// Quantize the absmax values too.
    pub double_quant: bool,
}

impl QuantConfig {
    /// QLoRA's choice: NF4, blocks of 64, double quantization.
    pub fn qlora() -> Self {
        Self { quant_type: QuantType::Nf4, blocksize: 64, double_quant: true }
    }

    /// Storage bits per parameter for large tensors: `4 + 32/b`, or `4 + 8/b + 32/(256·b)` with
    /// double quantization (4.5 and 4.127 for `b = 64`).
    pub fn bits_per_parameter(&self) -> f64 {
        let b = self.blocksize as f64;
        if self.double_quant { 4.0 + 8.0 / b + 32.0 / (NESTED_BLOCKSIZE as f64 * b) } else { 4.0 + 32.0 / b }
    }
}

/// The mean of the absmax values, rounded once from an `f64` sum.
///
/// bitsandbytes takes `absmax.mean()` in torch, whose `f32` summation order depends on the CPU's
/// vector width; the two agree exactly or differ by one unit in the last place.
pub fn mean(values: &[f32]) -> f32 {
    (values.iter().map(|v| *v as f64).sum::<f64>() / values.len().max(1) as f64) as f32
}

/// Double quantization of `absmax` around `offset`: 8-bit codes of `absmax − offset` in blocks
/// of 256 with the dynamic map.
pub fn double_quantize(absmax: &[f32], offset: f32) -> Absmax {
    let centered: Vec<f32> = absmax.iter().map(|v| v - offset).collect();
    let (codes, nested_absmax) = quantize_8bit(&centered, NESTED_BLOCKSIZE);
    Absmax::Double { codes, nested_absmax, nested_map: DYNAMIC_MAP.to_vec(), nested_blocksize: NESTED_BLOCKSIZE, offset }
}

/// The dtype names a quant state may give for the weight and its nested scales.
pub(crate) const FLOAT_DTYPES: [&str; 3] = ["float32", "float16", "bfloat16"];

impl Quantized4bit {
    /// Quantizes `data` (row-major, of `shape`, originally of `dtype`).
    pub fn quantize(name: &str, data: &[f32], shape: &[usize], dtype: &str, config: QuantConfig) -> Result<Self> {
        check_blocksize(config.blocksize)?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(QuantError::CorruptState { name: name.into(), reason: format!("{} values for shape {shape:?}", data.len()) });
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(QuantError::NonFinite(name.into()));
        }
        let (packed, absmax) = quantize_4bit(data, config.blocksize, config.quant_type)?;
        let absmax = if config.double_quant {
            double_quantize(&absmax, mean(&absmax))
        } else {
            Absmax::Plain(absmax)
        };
        Ok(Self {
            packed,
            state: QuantState {
                quant_type: config.quant_type,
                blocksize: config.blocksize,
                shape: shape.to_vec(),
                dtype: dtype.to_string(),
                code: config.quant_type.code(),
                absmax,
            },
        })
    }

    /// Number of values.
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }

    /// Number of values, `None` when the shape's product overflows.
    fn checked_numel(&self) -> Option<usize> {
        self.state.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// The per-block absmax values, dequantized when double-quantized.
    pub fn absmax(&self) -> Vec<f32> {
        match &self.state.absmax {
            Absmax::Plain(v) => v.clone(),
            Absmax::Double { codes, nested_absmax, nested_map, nested_blocksize, offset } => {
                dequantize_8bit(codes, nested_absmax, nested_map, *nested_blocksize).into_iter().map(|v| v + offset).collect()
            }
        }
    }

    /// The dense `f32` values, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        dequantize_4bit(&self.packed, &self.absmax(), &self.state.code, self.state.blocksize, self.numel())
    }

    /// The dense values encoded as `dtype` (`F32`, `BF16` or `F16`; computed in `f32`, then
    /// rounded to nearest even, as bitsandbytes' kernels do), little-endian bytes.
    pub fn dequantize_to(&self, dtype: safetensors::Dtype) -> Result<Vec<u8>> {
        peft_core::checkpoint::from_f32(&self.dequantize(), dtype).map_err(|e| QuantError::CorruptState { name: "dequantize".into(), reason: e.to_string() })
    }

    /// Storage bits per parameter of this tensor (packed codes and scales; the shared maps and
    /// the JSON state not counted).
    pub fn bits_per_parameter(&self) -> f64 {
        let scale_bits = match &self.state.absmax {
            Absmax::Plain(v) => 32 * v.len(),
            Absmax::Double { codes, nested_absmax, .. } => 8 * codes.len() + 32 * nested_absmax.len() + 32,
        };
        (8 * self.packed.len() + scale_bits) as f64 / self.numel() as f64
    }

    /// Checks that the parts agree with the shape and block sizes.
    pub fn validate(&self, name: &str) -> Result<()> {
        let corrupt = |reason: String| QuantError::CorruptState { name: name.into(), reason };
        check_blocksize(self.state.blocksize).map_err(|e| corrupt(e.to_string()))?;
        if !FLOAT_DTYPES.contains(&self.state.dtype.as_str()) {
            return Err(corrupt(format!("dtype `{}` (expected float32, float16 or bfloat16)", self.state.dtype)));
        }
        if self.checked_numel().is_none() {
            return Err(corrupt(format!("shape {:?} has more values than fit in memory", self.state.shape)));
        }
        let finite = |values: &[f32]| values.iter().all(|v| v.is_finite());
        let scales_finite = finite(&self.state.code)
            && match &self.state.absmax {
                Absmax::Plain(v) => finite(v),
                Absmax::Double { nested_absmax, nested_map, offset, .. } => finite(nested_absmax) && finite(nested_map) && offset.is_finite(),
            };
        if !scales_finite {
            return Err(corrupt("NaN or infinite scales, code or offset".into()));
        }
        let n = self.numel();
        if self.packed.len() != n.div_ceil(2) {
            return Err(corrupt(format!("{} packed bytes for {n} values", self.packed.len())));
        }
        let blocks = n.div_ceil(self.state.blocksize);
        match &self.state.absmax {
            Absmax::Plain(v) if v.len() != blocks => Err(corrupt(format!("{} absmax values for {blocks} blocks", v.len()))),
            Absmax::Double { codes, nested_absmax, nested_map, nested_blocksize, .. } => {
                if codes.len() != blocks {
                    return Err(corrupt(format!("{} absmax codes for {blocks} blocks", codes.len())));
                }
                if *nested_blocksize == 0 || nested_absmax.len() != blocks.div_ceil(*nested_blocksize) {
                    return Err(corrupt(format!("{} nested absmax values for {blocks} blocks in groups of {nested_blocksize}", nested_absmax.len())));
                }
                if nested_map.len() != 256 {
                    return Err(corrupt(format!("nested quant map has {} values, expected 256", nested_map.len())));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
