//! LoRA and IA3 on [`BaseLinear`], a linear layer that is dense or 4-bit: each call goes to the
//! method's own implementation for `Linear` or for `QLinear` (QLoRA).

use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Result, Tuner, TunerForward};
use peft_quant::backend::QuantLinearBackend;
use peft_quant::{BaseLinear, QLinear};

use crate::{Ia3, Lora};

/// `Tuner` and `TunerForward` on `BaseLinear` for a method that has both on `Linear` and `QLinear`.
macro_rules! on_base_linear {
    ($method:ident) => {
        impl<B: Backend> Tuner<B, BaseLinear<B>> for $method<B> {
            type Config = <$method<B> as Tuner<B, Linear<B>>>::Config;

            fn init(config: &Self::Config, base: &mut BaseLinear<B>, path: &str) -> Result<Self> {
                match base {
                    BaseLinear::Dense(l) => <Self as Tuner<B, Linear<B>>>::init(config, l, path),
                    BaseLinear::Quantized(q) => <Self as Tuner<B, QLinear<B>>>::init(config, q, path),
                }
            }

            fn method(&self) -> &'static str {
                <Self as Tuner<B, Linear<B>>>::method(self)
            }

            fn merge(&mut self, base: BaseLinear<B>, path: &str) -> Result<BaseLinear<B>> {
                match base {
                    BaseLinear::Dense(l) => Tuner::<B, Linear<B>>::merge(self, l, path).map(BaseLinear::Dense),
                    BaseLinear::Quantized(q) => Tuner::<B, QLinear<B>>::merge(self, q, path).map(BaseLinear::Quantized),
                }
            }

            fn unmerge(&mut self, base: BaseLinear<B>, path: &str) -> Result<BaseLinear<B>> {
                match base {
                    BaseLinear::Dense(l) => Tuner::<B, Linear<B>>::unmerge(self, l, path).map(BaseLinear::Dense),
                    BaseLinear::Quantized(q) => Tuner::<B, QLinear<B>>::unmerge(self, q, path).map(BaseLinear::Quantized),
                }
            }

            fn combine(parts: &[(&Self, f64)], how: peft_core::Combination) -> Result<Self> {
                <Self as Tuner<B, Linear<B>>>::combine(parts, how)
            }
        }

        impl<B: QuantLinearBackend, const D: usize> TunerForward<B, BaseLinear<B>, Tensor<B, D>> for $method<B> {
            fn pre(&self, base: &BaseLinear<B>, input: Tensor<B, D>) -> Tensor<B, D> {
                match base {
                    BaseLinear::Dense(l) => TunerForward::<B, Linear<B>, _>::pre(self, l, input),
                    BaseLinear::Quantized(q) => TunerForward::<B, QLinear<B>, _>::pre(self, q, input),
                }
            }

            fn post(&self, base: &BaseLinear<B>, input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
                match base {
                    BaseLinear::Dense(l) => TunerForward::<B, Linear<B>, _>::post(self, l, input, output),
                    BaseLinear::Quantized(q) => TunerForward::<B, QLinear<B>, _>::post(self, q, input, output),
                }
            }
        }
    };
}

on_base_linear!(Lora);
on_base_linear!(Ia3);
