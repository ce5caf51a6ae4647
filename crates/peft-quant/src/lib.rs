//! 4-bit quantized bases for burn-peft (QLoRA).
//!
//! This crate holds bitsandbytes' 4-bit code tables. Blockwise quantization, double
//! quantization, the serialized layout and the frozen 4-bit linear layer come with the
//! peft-quant issue; nothing here quantizes yet.
#![warn(missing_docs)]

/// bitsandbytes' NF4 code: the 16 values a 4-bit NormalFloat index stands for, written as
/// bitsandbytes prints them.
#[allow(clippy::excessive_precision)]
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
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
