//! QLoRA on a GPU backend in f32 (f16: `qlora_device_f16.rs`, its own process because a device's
//! default float type is set once per process): Burn's wgpu backend with the CubeCL dequantization
//! kernel, behind operation fusion. Needs a Vulkan driver (lavapipe in CI). Run with
//! `cargo test -p peft-lora --features wgpu --test qlora_device`.
#![cfg(feature = "wgpu")]
mod common;
use common::*;

use burn::backend::Autodiff;
use burn::backend::wgpu::Wgpu;
use burn::tensor::DType;

#[test]
fn qlora_trains_on_the_device_in_f32() {
    let (first, last) = train::<Autodiff<Wgpu<f32, i32>>>(DType::F32);
    println!("QLoRA f32 on wgpu: loss {first:.4} -> {last:.4}");
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

