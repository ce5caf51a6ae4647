//! Gated LoRA (UniPELT; AdapterHub's LoRA `use_gating`): the update times `σ(gate(x))` averaged
//! over the sequence, in place of `alpha/r`; the gate trains with the factors; what a gated
//! update cannot do (merge, combine, DoRA, embeddings) is a typed error.
use crate::common;
use common::*;

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use peft_core::{Combination, PeftError, PeftModel, Targeting, TrainMode};
use peft_lora::{LoraConfig, LoraLinear};

fn gated() -> LoraConfig {
    LoraConfig::new(Targeting::names(&["up", "down"])).with_r(2).with_alpha(16.0).with_gating(true)
}

#[test]
fn a_gated_update_is_the_mean_gate_times_x_a_b() {
    let mut m = Mlp::<Nd>::new(1);
    m.add_adapter("g", &gated()).unwrap();
    let layer: &mut LoraLinear<Nd> = &mut m.up;
    let lora = layer.adapter_mut("g").unwrap();
    lora.b = Param::from_tensor(tensor([2, 8], 5));
    let gate = lora.gate.as_ref().expect("a gate");
    assert_eq!((gate.weight.dims(), lora.scaling), ([6, 1], 1.0), "d_in -> 1, and the gate replaces alpha/r");
    assert_eq!(gate.bias.as_ref().unwrap().val().into_scalar(), 0.0);
    let layer = &m.up;
    let x = tensor::<Nd, 3>([2, 3, 6], 7);
    let lora = layer.adapter("g").unwrap();
    let gate = lora.gate.as_ref().unwrap();
    // By hand: σ(x·w + b) per position, averaged over the 3 positions of each example.
    let g = sigmoid(x.clone().matmul(gate.weight.val().unsqueeze::<3>()) + gate.bias.as_ref().unwrap().val().unsqueeze::<3>()).mean_dim(1);
    let base = x.clone().matmul(layer.base.weight.val().unsqueeze::<3>()) + layer.base.bias.as_ref().unwrap().val().unsqueeze::<3>();
    let update = x.clone().matmul(lora.a.val().unsqueeze::<3>()).matmul(lora.b.val().unsqueeze::<3>()) * g;
    let got = layer.forward(x);
    assert!((got - (base + update)).abs().max().into_scalar() < 1e-6);
}

#[test]
fn the_gate_trains_and_a_gated_lora_refuses_what_it_cannot_do() {
    let mut m = Mlp::<Ad>::new(1);
    m.add_adapter("g", &gated()).unwrap();
    let m = peft_core::set_trainable(m, &TrainMode::adapters());
    let loss = (m.forward(tensor::<Ad, 2>([5, 6], 2)) - tensor::<Ad, 2>([5, 4], 3)).square().mean();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &m);
    let gate = m.up.adapter("g").unwrap().gate.as_ref().unwrap();
    // B starts at 0, so the gate's gradient starts at 0 too; A's is 0 as well; B's is not.
    assert!(grads.get::<Nd, 2>(m.up.adapter("g").unwrap().b.id).is_some());
    assert!(grads.get::<Nd, 2>(gate.weight.id).is_some(), "the gate is an adapter parameter");

    let mut m = Mlp::<Nd>::new(1);
    m.add_adapter("g", &gated()).unwrap();
    assert!(matches!(m.merge_adapters(false), Err(PeftError::NotMergeable { .. })));
    m.add_adapter("h", &gated()).unwrap();
    assert!(matches!(m.add_weighted_adapter(&[("g", 1.0), ("h", 1.0)], "gh", Combination::Linear), Err(PeftError::CannotCombine(_))));
    assert!(matches!(m.add_adapter("d", &gated().with_use_dora(true)), Err(PeftError::InvalidConfig(_))));
    let mut emb = burn::nn::EmbeddingConfig::new(10, 4).init::<Nd>(&dev());
    let built = <peft_lora::Lora<Nd> as peft_core::Tuner<Nd, burn::nn::Embedding<Nd>>>::init(&gated(), &mut emb, "emb");
    assert!(matches!(built, Err(PeftError::NotSupportedOn { .. })));
    let _: Tensor<Nd, 2> = m.forward(tensor([1, 6], 1));
}
