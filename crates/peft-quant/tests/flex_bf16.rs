//! bf16 compute on the CPU: Burn's portable backend (burn-flex) dequantizes to bf16 exactly as
//! bitsandbytes does (the product in f32, rounded once). Run with
//! `cargo test -p peft-quant --features flex --test flex_bf16`.
#![cfg(feature = "flex")]

use burn::backend::Flex;
use burn::tensor::{DType, FloatDType, IntDType, set_default_dtypes};
use peft_quant::{QLinear, QuantConfig, QuantType, Quantized4bit};

#[test]
fn dequantization_to_bf16_equals_bitsandbytes_rounding() {
    let device = Default::default();
    set_default_dtypes::<Flex>(&device, FloatDType::BF16, IntDType::I64).unwrap();
    for (rows, cols, quant_type, double_quant) in [(37, 29, QuantType::Nf4, true), (64, 48, QuantType::Fp4, false)] {
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i as u64).wrapping_mul(2654435761) % 10007) as f32 / 5003.5 - 1.0).collect();
        let q = Quantized4bit::quantize("w", &w, &[rows, cols], "float32", QuantConfig { quant_type, blocksize: 64, double_quant }).unwrap();
        let layer = QLinear::<Flex>::from_quantized(&q, None, &device).unwrap();
        let dense = layer.dequantize().transpose();
        assert_eq!(dense.dtype(), DType::BF16);
        let got = dense.into_data();
        let want = q.dequantize_to(safetensors::Dtype::BF16).unwrap();
        assert_eq!(got.as_bytes(), &want[..], "{rows}x{cols} {quant_type:?}");
    }
}
