//! QLoRA: LoRA on a frozen 4-bit base ([`QLinear`]), and merging into the dequantized weight.

use burn::module::{Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{ElementConversion, Tensor};
use burn::tensor::backend::Backend;
use peft_core::{PeftError, Result, Tuned, Tuner, TunerForward, in_dtype};
use peft_quant::backend::{QuantLinearBackend, dequantize_weight};
use peft_quant::{QLinear, QuantConfig};

use crate::lora::build;
use crate::{Lora, LoraConfig};

/// A 4-bit `QLinear` carrying named LoRA adapters.
pub type QLoraLinear<B> = Tuned<B, QLinear<B>, Lora<B>>;

impl<B: Backend> Tuner<B, QLinear<B>> for Lora<B> {
    type Config = LoraConfig;

    fn init(config: &LoraConfig, base: &mut QLinear<B>, path: &str) -> Result<Self> {
        config.supported_on(path, false, true, false, true)?;
        let dims = [base.meta.d_input, base.meta.d_output];
        let (lora, _) = build(config, dims, &base.absmax.device(), || dequantize_weight(&base.packed()).transpose(), path, false)?;
        Ok(lora.autocast_adapter_dtype())
    }

    fn method(&self) -> &'static str {
        "LORA"
    }

    fn merge(&mut self, _base: QLinear<B>, path: &str) -> Result<QLinear<B>> {
        let reason = ": the base is 4-bit; merge into the dequantized weight with peft_lora::merge_qlora (optionally re-quantized)".into();
        Err(PeftError::NotMergeable { adapter: String::new(), method: "LORA", path: path.into(), reason })
    }
}

impl<B: QuantLinearBackend, const D: usize> TunerForward<B, QLinear<B>, Tensor<B, D>> for Lora<B> {
    /// `h + s·B(A(dropout(x)))`: the 4-bit product plus the low-rank one, `[..., d_in] -> [..., d_out]`.
    /// With a half-precision compute type the low-rank product runs in the factors' f32 and is
    /// rounded to `h`'s type, as in HF peft's bitsandbytes LoRA layer.
    fn post(&self, _base: &QLinear<B>, input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
        let x = in_dtype(self.dropout.forward(input.clone()), self.a.val().dtype());
        let dtype = output.dtype();
        output + in_dtype(self.update(&in_dtype(input.clone(), self.a.val().dtype()), x), dtype)
    }
}

/// The result of [`merge_qlora`].
#[derive(Debug)]
pub struct QloraMerge<B: Backend> {
    /// The dequantized weight plus every active adapter, as a dense `Linear`.
    pub dense: Linear<B>,
    /// The dense weight quantized again, when asked for.
    pub requantized: Option<QLinear<B>>,
    /// Largest absolute difference between the re-quantized and the dense merged weight.
    pub max_abs_error: f32,
    /// Root-mean-square of that difference.
    pub rms_error: f32,
}

/// Merges the active adapters of a QLoRA layer into its dequantized weight (the recipe users ask
/// HF peft for), and optionally quantizes the result again, reporting the rounding error.
pub fn merge_qlora<B: QuantLinearBackend>(layer: &QLoraLinear<B>, requantize: Option<QuantConfig>) -> Result<QloraMerge<B>> {
    let mut weight = layer.base.dequantize();
    for name in layer.names() {
        if layer.is_active(name) {
            let delta = layer.adapter(name).expect("named adapter").delta_weight();
            let dtype = weight.dtype();
            weight = weight + in_dtype(delta, dtype);
        }
    }
    let meta = &layer.base.meta;
    let device = weight.device();
    let mut dense = LinearConfig::new(meta.d_input, meta.d_output).with_bias(layer.base.bias.is_some()).init::<B>(&device);
    dense.weight = Param::initialized(ParamId::new(), weight.clone().set_require_grad(false));
    dense.bias = layer.base.bias.clone().map(|b| Param::initialized(ParamId::new(), b));
    if !peft_core::all_finite(&dense) {
        return Err(PeftError::NonFinite { path: "qlora merge".into(), adapter: layer.names().join(", ") });
    }
    let (requantized, max_abs_error, rms_error) = match requantize {
        None => (None, 0.0, 0.0),
        Some(config) => {
            let q = QLinear::from_linear(&dense, config)?;
            let diff = q.dequantize() - weight;
            let max = diff.clone().abs().max().into_scalar().elem::<f32>();
            let rms = diff.square().mean().sqrt().into_scalar().elem::<f32>();
            (Some(q), max, rms)
        }
    };
    Ok(QloraMerge { dense, requantized, max_abs_error, rms_error })
}
