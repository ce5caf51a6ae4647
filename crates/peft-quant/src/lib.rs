//! 4-bit quantized bases for burn-peft (QLoRA).
//!
//! This crate holds bitsandbytes' 4-bit code tables. Blockwise quantization, double
//! quantization, the serialized layout and the frozen 4-bit linear layer come with the
//! peft-quant issue; nothing here quantizes yet.
#![warn(missing_docs)]

/// bitsandbytes' NF4 code: the 16 values a 4-bit NormalFloat index stands for.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_800_998_687_7,
    -0.525_073_051_452_636_7,
    -0.394_917_488_098_144_53,
    -0.284_441_381_692_886_35,
    -0.184_773_430_228_233_34,
    -0.091_050_036_251_544_95,
    0.0,
    0.079_580_299_556_255_34,
    0.160_930_201_411_247_25,
    0.246_112_301_945_686_34,
    0.337_915_241_718_292_24,
    0.440_709_829_330_444_34,
    0.562_617_003_917_694_1,
    0.722_956_836_223_602_3,
    1.0,
];

#[cfg(test)]
mod tests {
    #[test]
    fn nf4_code_is_sorted_and_spans_minus_one_to_one() {
        assert!(super::NF4_CODE.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((super::NF4_CODE[0], super::NF4_CODE[7], super::NF4_CODE[15]), (-1.0, 0.0, 1.0));
    }
}
