//! QLoRA on a GPU backend in f16: Burn's wgpu backend with the CubeCL dequantization kernel,
//! behind operation fusion; LoRA factors, activations and gradients in f16, the 4-bit scales in
//! f32. Needs a Vulkan driver (lavapipe in CI). Run with
//! `cargo test -p peft-lora --features wgpu --test qlora_device_f16`.
#![cfg(feature = "wgpu")]
mod common;
use common::*;

use burn::backend::Autodiff;
use burn::backend::wgpu::Wgpu;
use burn::tensor::{DType, FloatDType, IntDType, set_default_dtypes};

type Half = Autodiff<Wgpu<burn::tensor::f16, i32>>;

#[test]
fn qlora_trains_on_the_device_in_f16() {
    // Burn creates float tensors in the device's default type, f32 unless told otherwise.
    set_default_dtypes::<Half>(&Default::default(), FloatDType::F16, IntDType::I32).unwrap();
    let (first, last) = train::<Half>(DType::F16);
    println!("QLoRA f16 on wgpu: loss {first:.4} -> {last:.4}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}
