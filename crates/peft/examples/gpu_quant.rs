//! GPU measurements for peft-quant (the `cuda` feature and an NVIDIA GPU; with the `wgpu` feature
//! the same program runs on Vulkan, on which `.ci/run` runs it at small sizes on lavapipe):
//! 1. `dequant`: NF4 dequantization of an 8192×8192 weight by the CubeCL kernel and by Burn
//!    tensor operations, as a fraction of the card's memory bandwidth (`--bandwidth-gbs`, 4800 for
//!    an H200), after checking the kernel's output against the CPU path bit for bit;
//! 2. `lora` / `qlora`: one training step on a TinyLlama-width MLP stack, with the device memory
//!    the runtime reserved (its pool's high-water mark, so the run's peak).
//!
//! The compute type is `--dtype f32|f16|bf16` (one per process: Burn sets a device's default
//! float type once). Run each part in its own process so that the memory figures are its own:
//!
//! ```text
//! cargo build --release -p peft --features cuda --example gpu_quant
//! for d in f32 bf16 f16; do for p in dequant lora qlora; do
//!   target/release/examples/gpu_quant --dtype $d --part $p --bandwidth-gbs 4800; done; done
//! ```

#[cfg(any(feature = "cuda", feature = "wgpu"))]
mod measure {
    use std::time::Instant;

    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamConfig, GradientsParams, Optimizer};
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Distribution, FloatDType, IntDType, Tensor, bf16, f16, set_default_dtypes};
    use peft::core::Layer;
    use peft::lora::QLoraLinear;
    use peft_toy::mlp::ResidualMlp;
    use peft::prelude::*;
    use peft::quant::backend::{QuantLinearBackend, dequantize_weight};
    use peft::quant::kernel::device_memory;

    #[cfg(feature = "cuda")]
    mod gpu {
        pub use burn::backend::cuda::{Cuda as Gpu, CudaDevice as GpuDevice};
        pub use peft::quant::kernel::CudaRuntime as Runtime;
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    mod gpu {
        pub use burn::backend::wgpu::{Wgpu as Gpu, WgpuDevice as GpuDevice, WgpuRuntime as Runtime};
    }
    use gpu::{Gpu, GpuDevice, Runtime};
    use peft::quant::{QLinear, QuantConfig, Quantized4bit};

    fn arg(name: &str) -> Option<String> {
        std::env::args().skip_while(|a| a != name).nth(1)
    }

    fn time<B: Backend, F: FnMut()>(device: &B::Device, reps: usize, mut f: F) -> f64 {
        f();
        B::sync(device).unwrap();
        let start = Instant::now();
        for _ in 0..reps {
            f();
        }
        B::sync(device).unwrap();
        start.elapsed().as_secs_f64() / reps as f64
    }

    fn size(name: &str, default: usize) -> usize {
        arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
    }

    pub fn main() {
        let bandwidth: f64 = arg("--bandwidth-gbs").and_then(|v| v.parse().ok()).unwrap_or(4800.0);
        let part = arg("--part").unwrap_or_else(|| "dequant".into());
        match arg("--dtype").as_deref().unwrap_or("f32") {
            "f32" => run::<Gpu<f32, i32>>(DType::F32, &part, bandwidth),
            "f16" => run::<Gpu<f16, i32>>(DType::F16, &part, bandwidth),
            "bf16" => run::<Gpu<bf16, i32>>(DType::BF16, &part, bandwidth),
            other => panic!("--dtype {other}: expected f32, f16 or bf16"),
        }
    }

    fn run<G: QuantLinearBackend<Device = GpuDevice>>(dtype: DType, part: &str, bandwidth: f64) {
        let device = GpuDevice::default();
        let float = match dtype {
            DType::F16 => FloatDType::F16,
            DType::BF16 => FloatDType::BF16,
            _ => FloatDType::F32,
        };
        set_default_dtypes::<G>(&device, float, IntDType::I32).unwrap();
        match part {
            "dequant" => dequant::<G>(&device, dtype, bandwidth),
            "lora" | "qlora" => step::<Autodiff<G>>(&device, dtype, part == "qlora"),
            other => panic!("--part {other}: expected dequant, lora or qlora"),
        }
    }

    fn dequant<G: QuantLinearBackend<Device = GpuDevice>>(device: &GpuDevice, dtype: DType, bandwidth: f64) {
        let n = size("--n", 8192);
        let host: Vec<f32> = (0..n * n).map(|i| ((i as u64).wrapping_mul(2654435761) % 10007) as f32 / 5003.5 - 1.0).collect();
        let q = Quantized4bit::quantize("w", &host, &[n, n], "float32", QuantConfig::qlora()).unwrap();
        let layer = QLinear::<G>::from_quantized(&q, None, device).unwrap();
        let packed = layer.packed();

        // The kernel's output against the CPU path, every value, bit for bit.
        let st_dtype = match dtype {
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            _ => safetensors::Dtype::F32,
        };
        let want = q.dequantize_to(st_dtype).unwrap();
        let got = G::dequantize_packed(&packed).into_data();
        let width = want.len() / (n * n);
        let mismatches = got.as_bytes().chunks(width).zip(want.chunks(width)).filter(|(a, b)| a != b).count();
        println!("{dtype:?}: kernel vs CPU dequantization of {n}x{n}: {mismatches} values differ");
        assert_eq!(mismatches, 0, "the kernel differs from the CPU path");

        let out_bytes = match dtype {
            DType::F32 => 4.0,
            _ => 2.0,
        };
        let bytes = (n * n) as f64 / 2.0 + 4.0 * (n * n / 64) as f64 + out_bytes * (n * n) as f64;
        for (label, secs) in [
            ("CubeCL kernel", time::<G, _>(device, 50, || drop(G::dequantize_packed(&packed)))),
            ("Burn tensor ops", time::<G, _>(device, 20, || drop(dequantize_weight(&packed)))),
        ] {
            println!(
                "{dtype:?}: NF4 dequantization {n}x{n} ({label}): {:.3} ms, {:.0} GB/s, {:.1}% of {bandwidth} GB/s",
                secs * 1e3,
                bytes / secs / 1e9,
                100.0 * bytes / secs / 1e9 / bandwidth
            );
        }
    }

    fn step<T: QuantLinearBackend<Device = GpuDevice> + burn::tensor::backend::AutodiffBackend>(device: &GpuDevice, dtype: DType, quantized: bool) {
        let (d, ff, layers, tokens) = (size("--d", 2048), size("--ff", 5632), size("--layers", 4), size("--tokens", 4096));
        let lora_cfg = LoraConfig::new(Targeting::names(&["up", "down"])).with_r(16).with_alpha(32.0);
        let dense: Vec<(Linear<T>, Linear<T>)> = (0..layers).map(|_| (LinearConfig::new(d, ff).init(device).no_grad(), LinearConfig::new(ff, d).init(device).no_grad())).collect();
        let x = Tensor::<T, 2>::random([tokens, d], Distribution::Default, device);
        let secs = if quantized {
            let qz = |l: &Linear<T>| Tuned::new(QLinear::from_linear(l, QuantConfig::qlora()).unwrap());
            let mut m: ResidualMlp<T, QLoraLinear<T>> = ResidualMlp::new(dense.iter().map(|(u, dn)| (qz(u), qz(dn))).collect());
            drop(dense);
            m.add_adapter("a", &lora_cfg).unwrap();
            step_time(m, &x, device)
        } else {
            let mut m: ResidualMlp<T, LoraLinear<T>> = ResidualMlp::new(dense.into_iter().map(|(u, dn)| (Tuned::new(u), Tuned::new(dn))).collect());
            m.add_adapter("a", &lora_cfg).unwrap();
            step_time(m, &x, device)
        };
        let reserved = device_memory::<Runtime>(device).map_or(0, |(_, reserved)| reserved);
        println!(
            "{dtype:?}: {} step, {layers} blocks {d}->{ff}->{d}, {tokens} tokens: {:.1} ms; device memory reserved (the pool's high-water mark) {:.0} MiB",
            if quantized { "QLoRA" } else { "LoRA" },
            secs * 1e3,
            reserved as f64 / 1048576.0
        );
    }

    fn step_time<T, L>(model: ResidualMlp<T, L>, x: &Tensor<T, 2>, device: &GpuDevice) -> f64
    where
        T: QuantLinearBackend<Device = GpuDevice> + burn::tensor::backend::AutodiffBackend,
        L: Layer<T, Tensor<T, 2>, Output = Tensor<T, 2>> + burn::module::AutodiffModule<T> + 'static,
        ResidualMlp<T, L>: burn::module::AutodiffModule<T>,
    {
        let mut model = Some(set_trainable(model, &TrainMode::adapters()));
        let mut optim = AdamConfig::new().init::<T, ResidualMlp<T, L>>();
        time::<T, _>(device, 5, || {
            let m = model.take().unwrap();
            let loss = m.forward(x.clone()).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optim.step(1e-4, m, grads));
        })
    }
}

fn main() {
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    measure::main();
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    eprintln!("gpu_quant needs the `cuda` or the `wgpu` feature");
}
