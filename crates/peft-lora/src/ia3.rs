//! IA3: learned elementwise scaling of a dense layer's input (feed-forward) or output, on a
//! `Linear` or a 4-bit `QLinear`.

mod config;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{LayerKind, PeftError, Result, Tuner, TunerForward, frozen_like, trainable};
use peft_quant::QLinear;
use peft_quant::backend::QuantLinearBackend;

pub use config::Ia3Config;

use crate::lora::broadcast_last;

/// IA3 on a dense layer: `l [d_in]` scales the input of feed-forward layers, `l [d_out]` the
/// output of the others. Starts at ones, so the model is unchanged.
#[derive(Module, Debug)]
pub struct Ia3<B: Backend> {
    /// The scaling vector (HF peft's `ia3_l`, flattened).
    pub scale: Param<Tensor<B, 1>>,
    /// Whether the input (true) or the output (false) is scaled.
    pub feedforward: bool,
}

impl<B: Backend> Ia3<B> {
    /// Ones for a layer `[d_in, d_out]` at `path`.
    fn build(config: &Ia3Config, [d_in, d_out]: [usize; 2], device: &B::Device, path: &str) -> Result<Self> {
        let feedforward = config.feedforward_modules.matches(path, LayerKind::Linear)?;
        let d = if feedforward { d_in } else { d_out };
        Ok(Self { scale: trainable(Tensor::ones([d], device)), feedforward })
    }

    /// `W·diag(l)` on rows (feed-forward) or columns, and the bias for output scaling.
    fn rescale(&self, mut base: Linear<B>, l: Tensor<B, 1>) -> Linear<B> {
        let w = base.weight.val();
        let scaled = if self.feedforward { w * l.clone().unsqueeze_dim(1) } else { w * l.clone().unsqueeze_dim(0) };
        base.weight = frozen_like(&base.weight, scaled);
        if !self.feedforward && let Some(bias) = &base.bias {
            base.bias = Some(frozen_like(bias, bias.val() * l));
        }
        base
    }

    /// Feed-forward: `x ⊙ l`, `x: [..., d_in]`.
    fn scale_input<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if self.feedforward { x * broadcast_last::<B, D>(self.scale.val()) } else { x }
    }

    /// Otherwise: `h ⊙ l`, `h: [..., d_out]`.
    fn scale_output<const D: usize>(&self, h: Tensor<B, D>) -> Tensor<B, D> {
        if self.feedforward { h } else { h * broadcast_last::<B, D>(self.scale.val()) }
    }
}

impl<B: Backend> Tuner<B, Linear<B>> for Ia3<B> {
    type Config = Ia3Config;

    fn init(config: &Ia3Config, base: &mut Linear<B>, path: &str) -> Result<Self> {
        Self::build(config, base.weight.dims(), &base.weight.device(), path)
    }

    fn method(&self) -> &'static str {
        "IA3"
    }

    fn merge(&mut self, base: Linear<B>, _path: &str) -> Result<Linear<B>> {
        Ok(self.rescale(base, self.scale.val()))
    }

    fn unmerge(&mut self, base: Linear<B>, path: &str) -> Result<Linear<B>> {
        let l = self.scale.val();
        if !l.clone().abs().greater_elem(0.0).all().into_data().iter::<bool>().all(|b| b) {
            return Err(PeftError::NonFinite { path: path.into(), adapter: "IA3 unmerge (zero scale)".into() });
        }
        Ok(self.rescale(base, l.recip()))
    }
}

impl<B: Backend> Tuner<B, QLinear<B>> for Ia3<B> {
    type Config = Ia3Config;

    fn init(config: &Ia3Config, base: &mut QLinear<B>, path: &str) -> Result<Self> {
        Self::build(config, [base.meta.d_input, base.meta.d_output], &base.absmax.device(), path)
    }

    fn method(&self) -> &'static str {
        "IA3"
    }
}

impl<B: Backend, const D: usize> TunerForward<B, Linear<B>, Tensor<B, D>> for Ia3<B> {
    /// Feed-forward: `x ⊙ l` before the layer, `x: [..., d_in]`.
    fn pre(&self, _base: &Linear<B>, input: Tensor<B, D>) -> Tensor<B, D> {
        self.scale_input(input)
    }

    /// Otherwise: `h ⊙ l` after it, `h: [..., d_out]`.
    fn post(&self, _base: &Linear<B>, _input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
        self.scale_output(output)
    }
}

impl<B: QuantLinearBackend, const D: usize> TunerForward<B, QLinear<B>, Tensor<B, D>> for Ia3<B> {
    /// As on a `Linear`, around the 4-bit product.
    fn pre(&self, _base: &QLinear<B>, input: Tensor<B, D>) -> Tensor<B, D> {
        self.scale_input(input)
    }

    fn post(&self, _base: &QLinear<B>, _input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
        self.scale_output(output)
    }
}
