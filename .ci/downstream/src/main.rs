//! The README's first steps, as a user's crate builds them: wrap a layer, add LoRA, train one
//! step, and check that disabling the adapter gives the base back exactly.

use burn::backend::{Autodiff, NdArray};
use burn::nn::LinearConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft::prelude::*;

#[derive(burn::module::Module, Debug)]
struct Mlp<B: Backend> {
    up: LoraLinear<B>,
}
peft::adaptable!(Mlp { up });

fn main() -> Result<(), PeftError> {
    type B = Autodiff<NdArray>;
    let device = Default::default();
    let mut model = Mlp::<B> { up: Tuned::new(LinearConfig::new(8, 4).init(&device)) };
    model.add_adapter("task", &LoraConfig::new(Targeting::names(&["up"])).with_r(2))?;
    let mut model = set_trainable(model, &TrainMode::adapters());
    let x = Tensor::<B, 2>::random([3, 8], Distribution::Default, &device);
    let base = {
        let mut off = model.clone();
        off.disable_adapters()?;
        off.up.forward(x.clone()).into_data()
    };
    let loss = model.up.forward(x.clone()).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    model = AdamConfig::new().init().step(1e-2, model, grads);
    model.disable_adapters()?;
    assert_eq!(model.up.forward(x).into_data(), base);
    println!("downstream: LoRA trained one step; disabled, the base comes back exactly");
    Ok(())
}
