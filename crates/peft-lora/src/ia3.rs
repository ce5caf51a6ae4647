//! IA3: learned elementwise scaling of a dense layer's input (feed-forward) or output.

use std::any::Any;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{LayerKind, PeftError, Result, Site, Tuner, TunerForward, frozen_like, trainable};

use crate::Ia3Config;
use crate::lora::broadcast_last;

/// IA3 on a [`Linear`]: `l [d_in]` scales the input of feed-forward layers, `l [d_out]` the
/// output of the others. Starts at ones, so the model is unchanged.
#[derive(Module, Debug)]
pub struct Ia3<B: Backend> {
    /// The scaling vector (HF peft's `ia3_l`, flattened).
    pub scale: Param<Tensor<B, 1>>,
    /// Whether the input (true) or the output (false) is scaled.
    pub feedforward: bool,
}

impl<B: Backend> Tuner<B, Linear<B>> for Ia3<B> {
    const SITE: Site = Site::Weight;

    fn accepts(config: &dyn Any) -> bool {
        config.is::<Ia3Config>()
    }

    fn from_config(config: &dyn Any, base: &mut Linear<B>, path: &str) -> Option<Result<Self>> {
        let config = config.downcast_ref::<Ia3Config>()?;
        Some(config.feedforward_modules.matches(path, LayerKind::Linear).map(|feedforward| {
            let [d_in, d_out] = base.weight.dims();
            let d = if feedforward { d_in } else { d_out };
            Self { scale: trainable(Tensor::ones([d], &base.weight.device())), feedforward }
        }))
    }

    fn merge(&mut self, base: Linear<B>, path: &str) -> Result<Linear<B>> {
        Ok(self.rescale(base, self.scale.val(), path))
    }

    fn unmerge(&mut self, base: Linear<B>, path: &str) -> Result<Linear<B>> {
        let l = self.scale.val();
        if !l.clone().abs().greater_elem(0.0).all().into_data().iter::<bool>().all(|b| b) {
            return Err(PeftError::NonFinite { path: path.into(), adapter: "IA3 unmerge (zero scale)".into() });
        }
        Ok(self.rescale(base, l.recip(), path))
    }
}

impl<B: Backend> Ia3<B> {
    /// `W·diag(l)` on rows (feed-forward) or columns, and the bias for output scaling.
    fn rescale(&self, mut base: Linear<B>, l: Tensor<B, 1>, _path: &str) -> Linear<B> {
        let w = base.weight.val();
        let scaled = if self.feedforward { w * l.clone().unsqueeze_dim(1) } else { w * l.clone().unsqueeze_dim(0) };
        base.weight = frozen_like(&base.weight, scaled);
        if !self.feedforward && let Some(bias) = &base.bias {
            base.bias = Some(frozen_like(bias, bias.val() * l));
        }
        base
    }
}

impl<B: Backend, const D: usize> TunerForward<B, Linear<B>, Tensor<B, D>> for Ia3<B> {
    /// Feed-forward: `x ⊙ l` before the layer, `x: [..., d_in]`.
    fn pre(&self, _base: &Linear<B>, input: Tensor<B, D>) -> Tensor<B, D> {
        if self.feedforward { input * broadcast_last::<B, D>(self.scale.val()) } else { input }
    }

    /// Otherwise: `h ⊙ l` after it, `h: [..., d_out]`.
    fn post(&self, _base: &Linear<B>, _input: &Tensor<B, D>, output: Tensor<B, D>) -> Tensor<B, D> {
        if self.feedforward { output } else { output * broadcast_last::<B, D>(self.scale.val()) }
    }
}
