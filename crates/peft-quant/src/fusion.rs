//! The fused form of a backend (`Fusion<B>`, which `burn::backend::Cuda` and `Wgpu` are with
//! Burn's `fusion` feature) records dequantization as one custom operation in its stream and runs
//! the inner backend's kernel when the stream executes.

use core::marker::PhantomData;

use burn::tensor::{Element, Shape, Tensor, TensorPrimitive};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

use crate::backend::{PackedWeight, QuantLinearBackend};

#[derive(Clone, Debug)]
struct Dequantize4bit<B> {
    desc: CustomOpIr,
    rows: usize,
    cols: usize,
    blocksize: usize,
    nibbles_per_word: usize,
    backend: PhantomData<B>,
}

impl<B: FusionBackend + QuantLinearBackend> Operation<B::FusionRuntime> for Dequantize4bit<B> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let ([words, absmax, code], [output]) = self.desc.as_fixed();
        let packed = PackedWeight::<B> {
            words: handles.get_int_tensor::<B>(words),
            absmax: handles.get_float_tensor::<B>(absmax),
            code: handles.get_float_tensor::<B>(code),
            rows: self.rows,
            cols: self.cols,
            blocksize: self.blocksize,
            nibbles_per_word: self.nibbles_per_word,
        };
        let dense = B::dequantize_packed(&packed).into_primitive().tensor();
        handles.register_float_tensor::<B>(&output.id, dense);
    }
}

impl<B: FusionBackend + QuantLinearBackend> QuantLinearBackend for Fusion<B> {
    fn dequantize_packed(w: &PackedWeight<Self>) -> Tensor<Self, 2> {
        let client = w.absmax.client.clone();
        let streams = OperationStreams::with_inputs([&w.words, &w.absmax, &w.code]);
        let output = TensorIr::uninit(client.create_empty_handle(), Shape::new([w.rows, w.cols]), <B::FloatElem as Element>::dtype());
        let desc = CustomOpIr::new(
            "peft_dequantize_4bit",
            &[w.words.clone().into_ir(), w.absmax.clone().into_ir(), w.code.clone().into_ir()],
            &[output],
        );
        let op = Dequantize4bit::<B> {
            desc: desc.clone(),
            rows: w.rows,
            cols: w.cols,
            blocksize: w.blocksize,
            nibbles_per_word: w.nibbles_per_word,
            backend: PhantomData,
        };
        let dense = client.register(streams, OperationIr::Custom(desc), op).output();
        Tensor::from_primitive(TensorPrimitive::Float(dense))
    }
}
