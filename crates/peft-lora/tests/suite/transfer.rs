//! A pretrained plain model's weights load into the same model with typed wrappers.
use crate::common;
use common::*;

use burn::module::Module;
use burn::nn::Linear;
use peft_core::{PeftError, PeftModel, Targeting, transfer_base_weights};
use peft_lora::LoraConfig;

#[derive(Module, Debug)]
struct Plain<B: burn::tensor::backend::Backend> {
    up: Linear<B>,
    down: Linear<B>,
}

#[derive(Module, Debug)]
struct OnlyUp<B: burn::tensor::backend::Backend> {
    up: Linear<B>,
}

#[derive(Module, Debug)]
struct Extra<B: burn::tensor::backend::Backend> {
    up: Linear<B>,
    down: Linear<B>,
    head: Linear<B>,
}

#[test]
fn plain_weights_load_into_the_wrapped_model_and_adapters_stay() {
    let plain = Plain::<Nd> { up: linear(6, 8, 1), down: linear(8, 4, 2) };
    let mut wrapped = Mlp::<Nd>::new(99);
    wrapped.add_adapter("a", &LoraConfig::new(Targeting::names(&["up", "down"])).with_r(2)).unwrap();
    let a_before = values(&wrapped.up.adapter("a").unwrap().a.val());
    let mut wrapped = transfer_base_weights(wrapped, &plain).unwrap();
    assert_eq!(values(&wrapped.up.adapter("a").unwrap().a.val()), a_before, "adapters changed");
    wrapped.disable_adapters().unwrap();
    let x = tensor::<Nd, 2>([3, 6], 3);
    let want = plain.down.forward(burn::tensor::activation::relu(plain.up.forward(x.clone())));
    assert_eq!(values(&wrapped.forward(x)), values(&want));
}

#[test]
fn missing_extra_or_misshapen_weights_are_typed_errors() {
    let wrapped = Mlp::<Nd>::new(1);
    match transfer_base_weights(wrapped.clone(), &OnlyUp::<Nd> { up: linear(6, 8, 1) }) {
        Err(PeftError::MissingTensor(name)) => assert_eq!(name, "down.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    match transfer_base_weights(wrapped.clone(), &Plain::<Nd> { up: linear(6, 8, 1), down: linear(8, 5, 2) }) {
        Err(PeftError::ShapeMismatch { name, .. }) => assert_eq!(name, "down.weight"),
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let extra = Extra::<Nd> { up: linear(6, 8, 1), down: linear(8, 4, 2), head: linear(4, 2, 3) };
    assert!(matches!(transfer_base_weights(wrapped, &extra), Err(PeftError::UnexpectedTensor { name, .. }) if name.contains("head.")));
}
