//! A gated prefix (UniPELT; AdapterHub's prefix `use_gating`): the prefix keys and values times
//! `σ(gate(x))` averaged over the sequence, per example; the gate trains with the prefix.
use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use peft_core::{PeftError, PeftModel, Targeting, TrainMode, Tuned};
use peft_ptuning::{AttentionKv, KvSite, PrefixConfig, PrefixKv};

type TB = NdArray;

#[derive(Module, Debug)]
struct Attn<B: Backend> {
    kv: PrefixKv<B>,
}
peft_core::adaptable!(Attn { kv });

fn attn<B: Backend>(input_dim: usize) -> Attn<B> {
    Attn { kv: Tuned::new(KvSite { kv_heads: 2, head_dim: 3, input_dim }) }
}

fn gated() -> PrefixConfig {
    PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3).with_gating(true)
}

fn random<B: Backend, const D: usize>(shape: [usize; D]) -> Tensor<B, D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
}

#[test]
fn a_gated_prefix_is_the_prefix_times_each_examples_mean_gate() {
    let mut a = attn::<TB>(4);
    a.add_adapter("g", &gated()).unwrap();
    let prefix = a.kv.adapter("g").unwrap().clone();
    let gate = prefix.gate.as_ref().expect("a gate");
    assert_eq!(gate.weight.dims(), [4, 1], "input_dim -> 1");
    assert_eq!(gate.bias.as_ref().unwrap().val().into_scalar(), 0.0);
    let (k, v, x) = (random::<TB, 4>([2, 2, 5, 3]), random::<TB, 4>([2, 2, 5, 3]), random::<TB, 3>([2, 5, 4]));
    let (k1, v1) = a.kv.forward(AttentionKv::new(k.clone(), v.clone(), x.clone()));
    assert_eq!(k1.dims(), [2, 2, 8, 3]);
    // `prefix` was cloned before the first pass: the gate (a Burn `Linear`, whose parameters
    // are drawn lazily) had its values already, or the clone would hold another gate.
    for b in 0..2 {
        // By hand: σ(x·w + b) at each of the example's 5 positions, averaged.
        let xb = x.clone().slice([b..b + 1, 0..5, 0..4]).reshape([5, 4]);
        let g = sigmoid(xb.matmul(gate.weight.val()) + gate.bias.as_ref().unwrap().val().unsqueeze::<2>()).mean().into_scalar();
        let keys = k1.clone().slice([b..b + 1, 0..2, 0..3, 0..3]).reshape([2, 3, 3]);
        let values = v1.clone().slice([b..b + 1, 0..2, 0..3, 0..3]).reshape([2, 3, 3]);
        assert!((keys - prefix.keys.val() * g).abs().max().into_scalar() < 1e-6);
        assert!((values - prefix.values.val() * g).abs().max().into_scalar() < 1e-6);
    }
    assert_eq!(k1.slice([0..2, 0..2, 3..8, 0..3]).into_data(), k.into_data(), "the layer's own keys are untouched");
    assert_eq!(v1.slice([0..2, 0..2, 3..8, 0..3]).into_data(), v.into_data());
}

#[test]
fn the_gate_trains_with_the_prefix() {
    type AD = Autodiff<TB>;
    let mut a = attn::<AD>(4);
    a.add_adapter("g", &gated()).unwrap();
    let a = peft_core::set_trainable(a, &TrainMode::adapters());
    let (k, v, x) = (random::<AD, 4>([2, 2, 5, 3]), random::<AD, 4>([2, 2, 5, 3]), random::<AD, 3>([2, 5, 4]));
    let (k1, v1) = a.kv.forward(AttentionKv::new(k, v, x));
    let loss = (k1.square().sum() + v1.sum()).reshape([1]);
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), &a);
    let prefix = a.kv.adapter("g").unwrap();
    let gate = prefix.gate.as_ref().unwrap();
    let gate_grad = grads.get::<TB, 2>(gate.weight.id).expect("the gate is an adapter parameter");
    assert!(gate_grad.abs().sum().into_scalar() > 0.0);
    assert!(grads.get::<TB, 3>(prefix.keys.id).is_some());
}

#[test]
fn a_gate_needs_the_input_width() {
    let mut a = attn::<TB>(0);
    assert!(matches!(a.add_adapter("g", &gated()), Err(PeftError::NotSupportedOn { .. })));
    assert!(a.add_adapter("p", &gated().with_gating(false)).is_ok(), "an ungated prefix does not read the input");
}
