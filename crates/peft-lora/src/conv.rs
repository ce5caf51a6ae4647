//! LoRA for 2-D convolutions: `A` is a convolution with the base kernel, `B` a 1×1 convolution.

use burn::module::{Module, Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, PaddingConfig2d};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{PeftError, Result, Tuner, TunerForward, frozen_like, trainable};

use crate::LoraConfig;
use crate::init::{check_rank, init_a};

/// LoRA on a [`Conv2d`]: `A [r, c_in, kh, kw]` (the base's stride, padding and dilation),
/// `B [c_out, r, 1, 1]`, as HF peft's `lora_A`/`lora_B` conv weights.
#[derive(Module, Debug)]
pub struct LoraConv2d<B: Backend> {
    /// Down convolution `[r, c_in, kh, kw]`.
    pub a: Param<Tensor<B, 4>>,
    /// Up 1×1 convolution `[c_out, r, 1, 1]`.
    pub b: Param<Tensor<B, 4>>,
    /// Dropout on the adapter input.
    pub dropout: Dropout,
    /// `alpha/r` or `alpha/sqrt(r)`.
    pub scaling: f64,
}

impl<B: Backend> LoraConv2d<B> {
    /// `s·(B ∘ A)` as a dense kernel `[c_out, c_in, kh, kw]`, for merging only.
    pub fn delta_weight(&self) -> Tensor<B, 4> {
        let [r, c_in, kh, kw] = self.a.dims();
        let [c_out, ..] = self.b.dims();
        let a = self.a.val().reshape([r, c_in * kh * kw]);
        let b = self.b.val().reshape([c_out, r]);
        b.matmul(a).mul_scalar(self.scaling).reshape([c_out, c_in, kh, kw])
    }

    fn conv(weight: Tensor<B, 4>, like: &Conv2d<B>, one_by_one: bool) -> Conv2d<B> {
        let [_, _, kh, kw] = weight.dims();
        Conv2d {
            weight: Param::initialized(ParamId::new(), weight),
            bias: None,
            stride: if one_by_one { [1, 1] } else { like.stride },
            kernel_size: [kh, kw],
            dilation: if one_by_one { [1, 1] } else { like.dilation },
            groups: 1,
            padding: if one_by_one { PaddingConfig2d::Valid } else { like.padding.clone() },
        }
    }
}

impl<B: Backend> Tuner<B, Conv2d<B>> for LoraConv2d<B> {
    type Config = LoraConfig;

    fn init(config: &LoraConfig, base: &mut Conv2d<B>, path: &str) -> Result<Self> {
        let (r, scaling) = config.rank_and_scaling(path)?;
        if base.groups != 1 {
            return Err(PeftError::NotSupportedOn { feature: "LoRA on a grouped convolution".into(), path: path.into() });
        }
        config.supported_on(path, false, false, false, false)?;
        let [c_out, c_in, kh, kw] = base.weight.dims();
        let fan_in = c_in * kh * kw;
        check_rank(path, r, fan_in, c_out)?;
        let device = base.weight.device();
        Ok(Self {
            a: trainable(init_a(config.init, [r, c_in, kh, kw], fan_in, r, &device)),
            b: trainable(Tensor::zeros([c_out, r, 1, 1], &device)),
            dropout: DropoutConfig::new(config.dropout).init(),
            scaling,
        })
    }

    fn method(&self) -> &'static str {
        "LORA"
    }

    fn merge(&mut self, mut base: Conv2d<B>, _path: &str) -> Result<Conv2d<B>> {
        let merged = base.weight.val() + self.delta_weight();
        base.weight = frozen_like(&base.weight, merged);
        Ok(base)
    }

    fn unmerge(&mut self, mut base: Conv2d<B>, _path: &str) -> Result<Conv2d<B>> {
        let original = base.weight.val() - self.delta_weight();
        base.weight = frozen_like(&base.weight, original);
        Ok(base)
    }
}

impl<B: Backend> TunerForward<B, Conv2d<B>, Tensor<B, 4>> for LoraConv2d<B> {
    /// `h + s·B(A(dropout(x)))`; `x: [batch, c_in, h, w]`, `h: [batch, c_out, h', w']`.
    fn post(&self, base: &Conv2d<B>, input: &Tensor<B, 4>, output: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.dropout.forward(input.clone());
        let down = Self::conv(self.a.val(), base, false).forward(x);
        output + Self::conv(self.b.val(), base, true).forward(down).mul_scalar(self.scaling)
    }
}
