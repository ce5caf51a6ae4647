//! QLoRA in bf16 on the CPU: Burn's portable backend (burn-flex) computes the frozen 4-bit base in
//! bf16; the adapter's weights stay in f32. Run with
//! `cargo test -p peft-lora --features flex --test qlora_flex_bf16`.
#![cfg(feature = "flex")]
mod common;
use common::*;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, FloatDType, IntDType, set_default_dtypes};

#[test]
fn qlora_trains_in_bf16() {
    type Bf16 = Autodiff<Flex>;
    set_default_dtypes::<Bf16>(&Default::default(), FloatDType::BF16, IntDType::I64).unwrap();
    let (first, last) = train::<Bf16>(DType::BF16);
    println!("QLoRA bf16 on burn-flex: loss {first:.4} -> {last:.4}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}
