//! The 4-bit dequantization kernel in CubeCL, for every CubeCL backend (CUDA, wgpu/Vulkan, ...).
//!
//! One thread writes one vector of `N` consecutive values (`N` = 8, 4, 2 or 1: the widest that
//! the runtime stores at once and that divides both the weight's size and a packed word). It
//! reads its packed word once, shifts the `N` codes out, looks them up in the 16-value table and
//! scales them by the block's absmax (a vector never straddles a block: blocks are at least 32
//! values). Consecutive threads write consecutive vectors, so the dense output, which is most of
//! the traffic (4 or 2 bytes per value against half a byte read), is written coalesced and wide.
//! The product is taken in f32 and rounded once to the output type, as bitsandbytes does, so the
//! result equals the CPU path bit for bit (checked in f32 and f16; bf16 runs on CUDA only).

use burn::tensor::DType;
use burn::tensor::Shape;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_cubecl::element::BoolElement;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;
use cubecl::{CubeCount, calculate_cube_count_elemwise};

use crate::backend::{PackedWeight, QuantLinearBackend};

pub use device_code::dequantize_4bit_kernel;

/// Code compiled for the device (the `#[cube]` macro's generated items carry no docs).
#[allow(missing_docs)]
mod device_code {
    use cubecl::prelude::*;

    /// `output[i] = code[nibble i] * absmax[i / blocksize]`, `N` values per thread, the product
    /// in f32 and rounded once to `F`, as bitsandbytes does.
    #[cube(launch)]
    pub fn dequantize_4bit_kernel<F: Float, I: Int, N: Size>(
        words: &Array<I>,
        absmax: &Array<f32>,
        code: &Array<f32>,
        output: &mut Array<Vector<F, N>>,
        #[comptime] blocksize: usize,
        #[comptime] nibbles_per_word: usize,
    ) {
        let v = ABSOLUTE_POS;
        if v >= output.len() {
            terminate!();
        }
        let first = v * N::value();
        let word = words[first / nibbles_per_word];
        let scale = absmax[first / blocksize];
        let offset = first % nibbles_per_word;
        let mut out = Vector::empty();
        #[unroll]
        for k in 0..N::value() {
            let shift = (nibbles_per_word - 1 - offset - k) * 4;
            let nibble = (word >> I::cast_from(shift)) & I::new(15);
            out[k] = F::cast_from(code[usize::cast_from(nibble)] * scale);
        }
        output[v] = out;
    }
}

/// The values each thread of [`dequantize_4bit_kernel`] writes on `device` for a weight of `n`
/// values of `elem_size` bytes packed `nibbles_per_word` to a word.
pub fn vector_width<R: CubeRuntime>(device: &R::Device, elem_size: usize, n: usize, nibbles_per_word: usize) -> usize {
    vector_size(&R::client(device), elem_size, n, nibbles_per_word)
}

/// The widest vector (8, 4, 2 or 1 values) the runtime stores at once for `elem_size`-byte
/// values that divides both `n` and a packed word.
fn vector_size<R: CubeRuntime>(client: &ComputeClient<R>, elem_size: usize, n: usize, nibbles_per_word: usize) -> usize {
    client
        .io_optimized_vector_sizes(elem_size)
        .filter(|&v| v <= 8 && n.is_multiple_of(v) && nibbles_per_word.is_multiple_of(v))
        .max()
        .unwrap_or(1)
}

/// The dense weight `[rows, cols]` in the backend's float type `F`, by [`dequantize_4bit_kernel`],
/// from the packed words and the f32 scales and code table.
pub fn dequantize_cube<R: CubeRuntime, F: FloatElement, I: IntElement>(
    words: CubeTensor<R>,
    absmax: CubeTensor<R>,
    code: CubeTensor<R>,
    rows: usize,
    cols: usize,
    blocksize: usize,
    nibbles_per_word: usize,
) -> CubeTensor<R> {
    let n = rows * cols;
    let client = absmax.client.clone();
    let device = absmax.device.clone();
    let buffer = client.empty(n * core::mem::size_of::<F>());
    let output = CubeTensor::new_contiguous(client.clone(), device, Shape::new([rows, cols]), buffer, F::dtype());
    if n == 0 {
        return output;
    }
    let vector = vector_size(&client, core::mem::size_of::<F>(), n, nibbles_per_word);
    let units = n / vector;
    let cube_dim = CubeDim::new(&client, units);
    let cube_count: CubeCount = calculate_cube_count_elemwise(&client, units, cube_dim);
    dequantize_4bit_kernel::launch::<F, I, R>(
        &client,
        cube_count,
        cube_dim,
        vector,
        words.into_array_arg(),
        absmax.into_array_arg(),
        code.into_array_arg(),
        output.clone().into_array_arg(),
        blocksize,
        nibbles_per_word,
    );
    output
}

fn f32_primitive<B: burn::tensor::backend::Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    peft_core::in_dtype(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(t)), DType::F32).into_primitive().tensor()
}

/// Every CubeCL backend dequantizes with [`dequantize_4bit_kernel`]; the product itself is Burn's
/// matmul, on one layer's dense weight at a time.
impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> QuantLinearBackend for CubeBackend<R, F, I, BT> {
    fn dequantize_packed(w: &PackedWeight<Self>) -> Tensor<Self, 2> {
        let words = burn_cubecl::kernel::into_contiguous(w.words.clone());
        let absmax = burn_cubecl::kernel::into_contiguous(f32_primitive::<Self>(w.absmax.clone()));
        let code = burn_cubecl::kernel::into_contiguous(f32_primitive::<Self>(w.code.clone()));
        let dense = dequantize_cube::<R, F, I>(words, absmax, code, w.rows, w.cols, w.blocksize, w.nibbles_per_word);
        Tensor::from_primitive(TensorPrimitive::Float(dense))
    }
}

/// Device memory as the CubeCL runtime on `device` counts it: `(bytes in use, bytes reserved)`.
/// The reserved bytes are its pool's size, which grows to the largest working set and so reads
/// as the peak of a run.
pub fn device_memory<R: CubeRuntime>(device: &R::Device) -> Option<(u64, u64)> {
    let usage = R::client(device).memory_usage().ok()?;
    Some((usage.bytes_in_use, usage.bytes_reserved))
}

#[cfg(feature = "cuda")]
pub use cubecl::cuda::CudaRuntime;
