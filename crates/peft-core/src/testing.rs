//! A dummy method for the unit tests: `Shift` adds a learned vector to a `Linear`'s output and
//! merges into its bias (or refuses to, to stand for the methods that cannot merge).

use burn::backend::NdArray;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::{MethodConfig, PeftError, Result, Site, Targeting, Tuned, Tuner, TunerForward, frozen_like, trainable};

pub(crate) type B = NdArray;

#[derive(Clone, Debug)]
pub(crate) struct ShiftConfig {
    pub(crate) targets: Targeting,
    pub(crate) value: f32,
    pub(crate) mergeable: bool,
}

impl ShiftConfig {
    pub(crate) fn new(targets: &[&str], value: f32) -> Self {
        Self { targets: Targeting::names(targets), value, mergeable: true }
    }
}

impl MethodConfig for ShiftConfig {
    fn peft_type(&self) -> &'static str {
        "SHIFT"
    }
    fn site(&self) -> Site {
        Site::Weight
    }
    fn targeting(&self) -> &Targeting {
        &self.targets
    }
    fn validate(&self) -> Result<()> {
        if self.value.is_finite() { Ok(()) } else { Err(PeftError::InvalidConfig(format!("value {}", self.value))) }
    }
}

/// `h + c`, `c [d_out]`.
#[derive(Module, Debug)]
pub(crate) struct Shift<B: Backend> {
    pub(crate) c: Param<Tensor<B, 1>>,
    pub(crate) mergeable: bool,
}

impl<B: Backend> Tuner<B, Linear<B>> for Shift<B> {
    type Config = ShiftConfig;

    fn init(config: &ShiftConfig, base: &mut Linear<B>, _path: &str) -> Result<Self> {
        let d_out = base.weight.dims()[1];
        Ok(Self { c: trainable(Tensor::full([d_out], config.value, &base.weight.device())), mergeable: config.mergeable })
    }

    fn method(&self) -> &'static str {
        "SHIFT"
    }

    fn merge(&mut self, mut base: Linear<B>, path: &str) -> Result<Linear<B>> {
        if !self.mergeable {
            return Err(PeftError::NotMergeable { adapter: String::new(), method: "SHIFT", path: path.into(), reason: String::new() });
        }
        let bias = base.bias.as_ref().expect("test layers have a bias");
        base.bias = Some(frozen_like(bias, bias.val() + self.c.val()));
        Ok(base)
    }

    fn unmerge(&mut self, mut base: Linear<B>, _path: &str) -> Result<Linear<B>> {
        let bias = base.bias.as_ref().expect("test layers have a bias");
        base.bias = Some(frozen_like(bias, bias.val() - self.c.val()));
        Ok(base)
    }
}

impl<B: Backend> TunerForward<B, Linear<B>, Tensor<B, 2>> for Shift<B> {
    fn post(&self, _base: &Linear<B>, _input: &Tensor<B, 2>, output: Tensor<B, 2>) -> Tensor<B, 2> {
        output + self.c.val().unsqueeze()
    }
}

pub(crate) type ShiftLinear = Tuned<B, Linear<B>, Shift<B>>;

/// A wrapped `Linear` `[d_in, d_out]` with fixed weights.
pub(crate) fn layer(d_in: usize, d_out: usize) -> ShiftLinear {
    let mut linear = LinearConfig::new(d_in, d_out).init::<B>(&Default::default());
    let values: Vec<f32> = (0..d_in * d_out).map(|i| (i as f32 * 0.37).sin()).collect();
    linear.weight = Param::from_tensor(Tensor::from_data(TensorData::new(values, [d_in, d_out]), &Default::default()));
    Tuned::new(linear)
}

pub(crate) fn input(rows: usize, d_in: usize) -> Tensor<B, 2> {
    let values: Vec<f32> = (0..rows * d_in).map(|i| (i as f32 * 0.11).cos()).collect();
    Tensor::from_data(TensorData::new(values, [rows, d_in]), &Default::default())
}

pub(crate) fn values(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}
