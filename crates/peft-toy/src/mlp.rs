//! A stack of residual feed-forward blocks, generic over its linear layer: the same model with a
//! dense base (`LoraLinear`) or a 4-bit one (`QLoraLinear`), for comparing the two.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use peft_core::{Adaptable, Layer};

/// `x + down(relu(up(x)))`.
#[derive(Module, Debug)]
pub struct MlpBlock<B: Backend, L: Module<B>> {
    /// `d -> d_ff`.
    pub up: L,
    /// `d_ff -> d`.
    pub down: L,
    phantom: core::marker::PhantomData<B>,
}

/// Residual feed-forward blocks.
#[derive(Module, Debug)]
pub struct ResidualMlp<B: Backend, L: Module<B>> {
    /// The blocks.
    pub blocks: Vec<MlpBlock<B, L>>,
}

impl<B: Backend, L: Module<B>> ResidualMlp<B, L> {
    /// One block per `(up, down)` pair.
    pub fn new(layers: Vec<(L, L)>) -> Self {
        Self { blocks: layers.into_iter().map(|(up, down)| MlpBlock { up, down, phantom: core::marker::PhantomData }).collect() }
    }

    /// `[n, d] -> [n, d]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>
    where
        L: Layer<B, Tensor<B, 2>, Output = Tensor<B, 2>>,
    {
        self.blocks.iter().fold(x, |h, b| h.clone() + b.down.forward_base(relu(b.up.forward_base(h))))
    }
}

peft_core::adaptable!(MlpBlock<L: Adaptable<B>> { up, down });
peft_core::adaptable!(ResidualMlp<L: Adaptable<B>> { blocks });
