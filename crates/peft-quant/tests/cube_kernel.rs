//! The CubeCL dequantization kernel against the CPU path, on Burn's wgpu backend (plain and fused).
//!
//! Needs a Vulkan driver: a GPU's, or Mesa's software one (lavapipe, Debian's
//! `mesa-vulkan-drivers`), which is what `.ci/run` installs. Run with
//! `cargo test -p peft-quant --features wgpu --test cube_kernel`.
#![cfg(feature = "wgpu")]

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::module::{Param, ParamId};
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use peft_core::checkpoint::{parse, to_f32};
use peft_quant::backend::{QuantLinearBackend, dequantize_weight};
use peft_quant::kernel::vector_width;
use peft_quant::{QLinear, QuantConfig, QuantType, Quantized4bit};

/// The kernel launched directly on the CubeCL backend.
type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
/// The same behind Burn's operation fusion, as `burn::backend::Cuda` is in the `peft` facade.
type Fused = Wgpu;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn weight(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    (0..rows * cols).map(|i| (((i as u64 + seed).wrapping_mul(2654435761) % 10007) as f32 / 5003.5 - 1.0) * 0.7).collect()
}

fn dense_on<B: QuantLinearBackend>(q: &Quantized4bit) -> Vec<f32> {
    let layer = QLinear::<B>::from_quantized(q, None, &Default::default()).unwrap();
    values(layer.dequantize().transpose())
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let bad = got.iter().zip(want).position(|(a, b)| a.to_bits() != b.to_bits());
    assert!(bad.is_none(), "{what}: value {} is {} on the device, {} on the CPU", bad.unwrap(), got[bad.unwrap()], want[bad.unwrap()]);
}

#[test]
fn the_kernel_equals_the_cpu_dequantization_bit_for_bit() {
    // Shapes whose size is not a multiple of the block or of the 8 codes in a word, both types,
    // several block sizes, with and without double quantization.
    let cases = [
        (37, 29, QuantType::Nf4, 64, true),
        (64, 96, QuantType::Fp4, 128, false),
        (5, 3, QuantType::Nf4, 32, false),
        (130, 70, QuantType::Fp4, 64, true),
        (256, 40, QuantType::Nf4, 4096, true),
        (2, 2, QuantType::Nf4, 64, false),
    ];
    // Whole vectors of 4 (WGSL's widest) where the size allows, single values where it is odd.
    let device = Default::default();
    assert_eq!(vector_width::<WgpuRuntime>(&device, 4, 64 * 96, 8), 4);
    assert_eq!(vector_width::<WgpuRuntime>(&device, 4, 37 * 29, 8), 1);
    for (rows, cols, quant_type, blocksize, double_quant) in cases {
        let w = weight(rows, cols, rows as u64);
        let q = Quantized4bit::quantize("w", &w, &[rows, cols], "float32", QuantConfig { quant_type, blocksize, double_quant }).unwrap();
        let want = q.dequantize();
        let what = format!("{rows}x{cols} {quant_type:?} block {blocksize} dq {double_quant}");
        assert_bits(&dense_on::<Cube>(&q), &want, &format!("kernel, {what}"));
        assert_bits(&dense_on::<Fused>(&q), &want, &format!("fused kernel, {what}"));
        assert_bits(&dense_on::<NdArray>(&q), &want, &format!("ndarray, {what}"));
    }
}

#[test]
fn the_kernel_reproduces_weights_written_by_bitsandbytes() {
    let bytes = include_bytes!("fixtures/bnb_4bit.safetensors");
    let st = parse(bytes, "fixture").unwrap();
    for case in ["c0", "c3", "c16", "c21"] {
        let q = Quantized4bit::read(&st, &format!("{case}.weight")).unwrap();
        let want = to_f32("dequant", &st.tensor(&format!("{case}.dequant")).unwrap()).unwrap();
        assert_bits(&dense_on::<Fused>(&q), &want, case);
    }
}

#[test]
fn the_kernel_equals_the_tensor_operation_dequantization() {
    let w = weight(48, 80, 3);
    let q = Quantized4bit::quantize("w", &w, &[48, 80], "float32", QuantConfig::qlora()).unwrap();
    let layer = QLinear::<Cube>::from_quantized(&q, None, &Default::default()).unwrap();
    let packed = layer.packed();
    assert_bits(&values(Cube::dequantize_packed(&packed)), &values(dequantize_weight(&packed)), "kernel vs tensor ops");
}

#[test]
fn the_4bit_layer_trains_the_same_on_the_device_as_on_the_cpu() {
    type Gpu = Autodiff<Fused>;
    type Cpu = Autodiff<NdArray>;
    let (d_in, d_out) = (72, 40);
    let cpu_device = Default::default();
    let mut base = LinearConfig::new(d_in, d_out).init::<Cpu>(&cpu_device);
    base.weight = Param::initialized(ParamId::new(), Tensor::random([d_in, d_out], Distribution::Normal(0.0, 0.5), &cpu_device));
    let q = QLinear::from_linear(&base, QuantConfig::qlora()).unwrap();
    let x: Vec<f32> = weight(6, d_in, 11);

    let run = |y: Vec<f32>, g: Vec<f32>| (y, g);
    let (y_cpu, g_cpu) = {
        let x = Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [6, d_in]), &cpu_device).require_grad();
        let y = q.forward(x.clone());
        let grads = (y.clone() * y.clone()).sum().backward();
        run(values(y), values(x.grad(&grads).unwrap()))
    };
    let (y_gpu, g_gpu) = {
        let device = Default::default();
        let qb = Quantized4bit::quantize("w", &values(base.weight.val().transpose()), &[d_out, d_in], "float32", QuantConfig::qlora()).unwrap();
        let bias: Vec<f32> = values(base.bias.as_ref().unwrap().val());
        let layer = QLinear::<Gpu>::from_quantized(&qb, Some(&bias), &device).unwrap();
        let x = Tensor::<Gpu, 2>::from_data(TensorData::new(x, [6, d_in]), &device).require_grad();
        let y = layer.forward(x.clone());
        let grads = (y.clone() * y.clone()).sum().backward();
        run(values(y), values(x.grad(&grads).unwrap()))
    };
    for (what, a, b) in [("output", &y_gpu, &y_cpu), ("input gradient", &g_gpu, &g_cpu)] {
        for (u, v) in a.iter().zip(b.iter()) {
            assert!((u - v).abs() <= 1e-4 * (1.0 + v.abs()), "{what}: {u} on the device, {v} on the CPU");
        }
    }
}

#[test]
fn the_kernel_rounds_to_f16_as_bitsandbytes_does() {
    type Half = CubeBackend<WgpuRuntime, burn::tensor::f16, i32, u32>;
    for (rows, cols, quant_type, double_quant) in [(37, 29, QuantType::Nf4, true), (64, 48, QuantType::Fp4, false)] {
        let w = weight(rows, cols, 5);
        let q = Quantized4bit::quantize("w", &w, &[rows, cols], "float32", QuantConfig { quant_type, blocksize: 64, double_quant }).unwrap();
        let want: Vec<f32> = q
            .dequantize_to(safetensors::Dtype::F16)
            .unwrap()
            .chunks(2)
            .map(|b| burn::tensor::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32())
            .collect();
        let layer = QLinear::<Half>::from_quantized(&q, None, &Default::default()).unwrap();
        let dense = layer.dequantize();
        assert_eq!(dense.dtype(), burn::tensor::DType::F16);
        assert_bits(&values(dense.transpose()), &want, &format!("f16 {rows}x{cols} {quant_type:?}"));
    }
}
