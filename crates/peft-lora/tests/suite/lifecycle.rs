//! Adapters over their life: training only what should train, merging, disabling, combining,
//! several named adapters, and typed errors on bad input.
use crate::common;
use common::*;

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use peft_core::{Combination, PeftError, PeftModel, TargetModules, Targeting, TrainMode, TrainableReport, list_params};
use peft_lora::{Ia3Config, LoraConfig, PathLora};

fn lora(r: usize) -> LoraConfig {
    LoraConfig::new(Targeting::names(&["up", "down"])).with_r(r).with_alpha(2.0 * r as f64)
}

/// Gives every adapter's `B` non-zero values so that adapters change the output.
fn perturb<B: burn::tensor::backend::Backend>(m: &mut Mlp<B>, name: &str, seed: u64) {
    for (i, layer) in [&mut m.up, &mut m.down].into_iter().enumerate() {
        let lora = layer.adapter_mut(name).unwrap();
        let dims = lora.b.dims();
        lora.b = Param::from_tensor(tensor(dims, seed + i as u64));
    }
}

fn weights<B: burn::tensor::backend::Backend>(m: &Mlp<B>) -> Vec<Vec<f32>> {
    vec![values(&m.up.base.weight.val()), values(&m.down.base.weight.val())]
}

#[test]
fn only_adapter_parameters_get_gradients_and_the_base_stays_bit_identical() {
    let mut m = Mlp::<Ad>::new(1);
    m.add_adapter("a", &lora(2)).unwrap();
    let mut m = peft_core::set_trainable(m, &TrainMode::adapters());
    let base_before = weights(&m);
    let bias_before = values(&m.up.base.bias.as_ref().unwrap().val());
    let mut optim = AdamConfig::new().init::<Ad, Mlp<Ad>>();
    let x = tensor::<Ad, 2>([5, 6], 2);
    let target = tensor::<Ad, 2>([5, 4], 3);
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..20 {
        let loss = (m.forward(x.clone()) - target.clone()).square().mean();
        last = loss.clone().into_scalar();
        first.get_or_insert(last);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        for id in [m.up.base.weight.id, m.down.base.weight.id, m.up.base.bias.as_ref().unwrap().id] {
            assert!(grads.get::<Nd, 2>(id).is_none() && grads.get::<Nd, 1>(id).is_none(), "base parameter got a gradient");
        }
        let a = m.up.adapter("a").unwrap();
        assert!(grads.get::<Nd, 2>(a.b.id).is_some(), "adapter B got no gradient");
        m = optim.step(1e-2, m, grads);
    }
    assert!(last < first.unwrap(), "loss did not fall: {first:?} -> {last}");
    assert_eq!(weights(&m), base_before, "base weights changed");
    assert_eq!(values(&m.up.base.bias.as_ref().unwrap().val()), bias_before);
    // Optimizer state exists only for the four adapter factors.
    assert_eq!(optim.to_record().len(), 4);
    let report = TrainableReport::new(&m, &TrainMode::adapters());
    assert_eq!(report.trainable, (6 * 2 + 2 * 8) + (8 * 2 + 2 * 4));
    assert_eq!(report.total, report.trainable + 6 * 8 + 8 + 8 * 4 + 4);
    assert!(report.to_string().starts_with("trainable params: 52 || all params: 144 || trainable%: 36.1111"));
}

#[test]
fn modules_to_save_train_in_full_and_full_mode_trains_everything() {
    let mut m = Mlp::<Ad>::new(1);
    m.add_adapter("a", &lora(2)).unwrap();
    let mode = TrainMode::adapters_and(&["down"]);
    let m = peft_core::set_trainable(m, &mode);
    let x = tensor::<Ad, 2>([5, 6], 2);
    let grads = GradientsParams::from_grads(m.forward(x.clone()).sum().backward(), &m);
    assert!(grads.get::<Nd, 2>(m.down.base.weight.id).is_some(), "module to save got no gradient");
    assert!(grads.get::<Nd, 2>(m.up.base.weight.id).is_none());
    let m = peft_core::set_trainable(m, &TrainMode::Full);
    let grads = GradientsParams::from_grads(m.forward(x).sum().backward(), &m);
    assert!(grads.get::<Nd, 2>(m.up.base.weight.id).is_some(), "full fine-tuning froze the base");
    let report = TrainableReport::new(&m, &TrainMode::Full);
    assert_eq!(report.trainable, report.total);
}

#[test]
fn disabled_adapters_give_exactly_the_base_output() {
    let base = Mlp::<Nd>::new(3);
    let x = tensor::<Nd, 2>([4, 6], 4);
    let want = values(&base.forward(x.clone()));
    let mut m = base.clone();
    m.add_adapter("a", &lora(2)).unwrap();
    perturb(&mut m, "a", 5);
    assert_ne!(values(&m.forward(x.clone())), want);
    m.disable_adapters().unwrap();
    assert_eq!(values(&m.forward(x.clone())), want, "disabled is not bit-identical to base");
    m.enable_adapters().unwrap();
    assert_ne!(values(&m.forward(x.clone())), want);
    m.set_active_adapters(&[]).unwrap();
    assert_eq!(values(&m.forward(x)), want, "no active adapter is not bit-identical to base");
}

fn check_merge(config: &dyn Fn(&mut Mlp<Nd>)) {
    let mut m = Mlp::<Nd>::new(7);
    config(&mut m);
    let x = tensor::<Nd, 2>([4, 6], 8);
    let unmerged = values(&m.forward(x.clone()));
    let before = weights(&m);
    m.merge_adapters(true).unwrap();
    assert_ne!(weights(&m), before, "merge changed nothing");
    assert_close(&values(&m.forward(x.clone())), &unmerged, 1e-5, "merged vs unmerged");
    assert!(m.disable_adapters().is_err(), "disabling while merged must be refused");
    m.unmerge_adapters().unwrap();
    for (w, b) in weights(&m).iter().zip(&before) {
        assert_close(w, b, 1e-6, "unmerge restores the base");
    }
    assert_close(&values(&m.forward(x)), &unmerged, 1e-5, "after unmerge");
}

#[test]
fn merge_equals_unmerged_and_unmerge_restores_lora_rslora_dora_ia3() {
    check_merge(&|m| {
        m.add_adapter("a", &lora(2)).unwrap();
        perturb(m, "a", 9);
    });
    check_merge(&|m| {
        m.add_adapter("a", &lora(3).with_use_rslora(true)).unwrap();
        perturb(m, "a", 10);
    });
    check_merge(&|m| {
        m.add_adapter("a", &lora(2).with_use_dora(true)).unwrap();
        perturb(m, "a", 11);
    });
    check_merge(&|m| {
        m.add_adapter("a", &lora(2).with_bias(true)).unwrap();
        perturb(m, "a", 12);
        m.up.adapter_mut("a").unwrap().bias = Some(Param::from_tensor(tensor([8], 13)));
    });
    check_merge(&|m| {
        m.add_adapter("a", &lora(2)).unwrap();
        m.add_adapter("b", &lora(4)).unwrap();
        perturb(m, "a", 14);
        perturb(m, "b", 15);
    });
}

#[test]
fn ia3_merge_equals_unmerged() {
    #[derive(Module, Debug)]
    struct M<B: burn::tensor::backend::Backend> {
        ff: peft_lora::Ia3Linear<B>,
        out: peft_lora::Ia3Linear<B>,
    }
    peft_core::adaptable!(M { ff, out });
    let mut m = M::<Nd> { ff: peft_core::Tuned::new(linear(6, 8, 1)), out: peft_core::Tuned::new(linear(8, 4, 2)) };
    m.add_adapter("i", &Ia3Config::new(Targeting::names(&["ff", "out"])).with_feedforward_modules(TargetModules::names(&["ff"]))).unwrap();
    m.ff.adapter_mut("i").unwrap().scale = Param::from_tensor(tensor::<Nd, 1>([6], 3) + 1.5);
    m.out.adapter_mut("i").unwrap().scale = Param::from_tensor(tensor::<Nd, 1>([4], 4) + 1.5);
    let x = tensor::<Nd, 2>([3, 6], 5);
    let f = |m: &M<Nd>| values(&m.out.forward(m.ff.forward(x.clone())));
    let unmerged = f(&m);
    let w = values(&m.out.base.weight.val());
    m.merge_adapters(true).unwrap();
    assert_close(&f(&m), &unmerged, 1e-5, "ia3 merged");
    m.unmerge_adapters().unwrap();
    assert_close(&values(&m.out.base.weight.val()), &w, 1e-6, "ia3 unmerge");
}

#[test]
fn safe_merge_refuses_nan_and_leaves_the_model_untouched() {
    let mut m = Mlp::<Nd>::new(1);
    m.add_adapter("a", &lora(2)).unwrap();
    perturb(&mut m, "a", 2);
    let dims = m.down.adapter("a").unwrap().b.dims();
    m.down.adapter_mut("a").unwrap().b = Param::from_tensor(Tensor::full(dims, f32::NAN, &dev()));
    let before = weights(&m);
    match m.merge_adapters(true) {
        Err(PeftError::NonFinite { path, adapter }) => {
            assert_eq!(path, "down");
            assert_eq!(adapter, "a");
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    assert_eq!(weights(&m), before, "a refused merge changed the base");
    assert!(!m.up.is_merged(), "a refused merge left a layer merged");
}

#[test]
fn several_named_adapters_add_activate_together_and_delete() {
    let mut m = Mlp::<Nd>::new(21);
    m.add_adapter("a", &lora(2)).unwrap();
    m.add_adapter("b", &lora(3)).unwrap();
    assert_eq!(m.adapter_names(), vec!["a", "b"]);
    perturb(&mut m, "a", 22);
    perturb(&mut m, "b", 23);
    let x = tensor::<Nd, 2>([2, 6], 24);
    let up_out = |m: &Mlp<Nd>| values(&m.up.forward(x.clone()));
    m.set_active_adapters(&["a"]).unwrap();
    let only_a = up_out(&m);
    m.set_active_adapters(&["b"]).unwrap();
    let only_b = up_out(&m);
    m.set_active_adapters(&[]).unwrap();
    let none = up_out(&m);
    m.set_active_adapters(&["a", "b"]).unwrap();
    let both = up_out(&m);
    let sum: Vec<f32> = only_a.iter().zip(&only_b).zip(&none).map(|((a, b), n)| a + b - n).collect();
    assert_close(&both, &sum, 1e-5, "two active adapters add");
    assert!(matches!(m.set_active_adapters(&["c"]), Err(PeftError::UnknownAdapter { .. })));
    assert!(matches!(m.add_adapter("a", &lora(2)), Err(PeftError::DuplicateAdapter { .. })));
    m.delete_adapter("a").unwrap();
    assert_eq!(m.adapter_names(), vec!["b"]);
    assert!(matches!(m.delete_adapter("a"), Err(PeftError::UnknownAdapter { .. })));
}

#[test]
fn cat_combination_is_exactly_the_weighted_sum_of_updates() {
    let mut m = Mlp::<Nd>::new(31);
    m.add_adapter("a", &lora(2)).unwrap();
    m.add_adapter("b", &lora(3)).unwrap();
    perturb(&mut m, "a", 32);
    perturb(&mut m, "b", 33);
    let da = values(&m.up.adapter("a").unwrap().delta_weight());
    let db = values(&m.up.adapter("b").unwrap().delta_weight());
    m.add_weighted_adapter(&[("a", 0.7), ("b", -0.4)], "ab", Combination::Cat).unwrap();
    let c = m.up.adapter("ab").unwrap();
    assert_eq!(c.rank(), 5);
    let want: Vec<f32> = da.iter().zip(&db).map(|(a, b)| 0.7 * a - 0.4 * b).collect();
    assert_close(&values(&c.delta_weight()), &want, 1e-5, "cat");
    assert!(m.up.is_active("ab") && !m.up.is_active("a"));
    // Linear needs equal ranks.
    assert!(m.add_weighted_adapter(&[("a", 1.0), ("b", 1.0)], "lin", Combination::Linear).is_err());
    m.add_weighted_adapter(&[("a", 1.0)], "lin", Combination::Linear).unwrap();
    assert_close(&values(&m.up.adapter("lin").unwrap().delta_weight()), &da, 1e-5, "linear of one");
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut m = Mlp::<Nd>::new(1);
    assert!(matches!(m.add_adapter("a", &lora(0)), Err(PeftError::ZeroRank { .. })));
    assert!(matches!(m.add_adapter("a", &lora(7)), Err(PeftError::RankTooLarge { rank: 7, max: 6, .. })));
    match m.add_adapter("a", &LoraConfig::new(Targeting::names(&["upp"]))) {
        Err(PeftError::NoTargetMatch { target, closest }) => {
            assert_eq!(target, "upp");
            assert_eq!(closest[0], "up");
        }
        other => panic!("expected NoTargetMatch, got {other:?}"),
    }
    assert!(matches!(m.add_adapter("a", &lora(2).with_dropout(1.5)), Err(PeftError::InvalidConfig(_))));
    assert!(m.adapter_names().is_empty(), "a failed add left adapters behind");
    m.add_adapter("a", &lora(2)).unwrap();
    let lora = m.up.adapter("a").unwrap().clone();
    let err = lora.load_factors(tensor([6, 3], 1), tensor([2, 8], 2)).unwrap_err();
    assert!(matches!(err, PeftError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("lora A"));
}

#[test]
fn path_based_lora_on_an_unmodified_model_matches_the_typed_wrappers() {
    #[derive(Module, Debug)]
    struct Plain<B: burn::tensor::backend::Backend> {
        up: burn::nn::Linear<B>,
        down: burn::nn::Linear<B>,
    }
    let plain = Plain::<Ad> { up: linear(6, 8, 41), down: linear(8, 4, 42) };
    let mut path = PathLora::new(plain, &lora(2)).unwrap();
    assert_eq!(path.paths(), ["up.weight", "down.weight"]);
    for (i, d) in path.deltas.iter_mut().enumerate() {
        let dims = d.b.dims();
        d.b = Param::from_tensor(tensor(dims, 43 + i as u64));
    }
    let mut typed = Mlp::<Ad> { up: peft_core::Tuned::new(path.base.up.clone()), down: peft_core::Tuned::new(path.base.down.clone()) };
    typed.up.add_adapter("a", path.deltas[0].clone()).unwrap();
    typed.down.add_adapter("a", path.deltas[1].clone()).unwrap();
    let x = tensor::<Ad, 2>([3, 6], 44);
    let eff = path.effective();
    let y = eff.down.forward(burn::tensor::activation::relu(eff.up.forward(x.clone())));
    assert_close(&values(&y), &values(&typed.forward(x.clone())), 1e-5, "path vs typed");
    // Gradients reach the factors only.
    let grads = GradientsParams::from_grads(y.sum().backward(), &path);
    assert!(grads.get::<Nd, 2>(path.deltas[0].a.id).is_some());
    assert!(grads.get::<Nd, 2>(path.base.up.weight.id).is_none());
    let merged = path.valid().merge(true).unwrap();
    let ym = merged.down.forward(burn::tensor::activation::relu(merged.up.forward(x.inner())));
    assert_close(&values(&ym), &values(&typed.forward(tensor([3, 6], 44)).inner()), 1e-5, "path merge");
    assert_eq!(list_params(&merged).len(), 4);
}
