//! Weighted combinations of LoRA adapters (`add_weighted_adapter`) against HF peft's on the
//! fixture Llama: peft folders `a` (r 4, alpha 8), `b` (r 2, alpha 3) and `c` (r 4, alpha 6),
//! combined with weights 0.7 and -0.4 (fixture by `tools/make_combination_fixtures.py`).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::checkpoint::{parse, read_bytes, to_f32};
use peft_core::{Combination, MajoritySign, PeftError, PeftModel};
use peft_hf::load_adapter;
use peft_models::HfModel;

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf")
}

fn case() -> PathBuf {
    root().join("adapters/llama_combination")
}

fn tokens() -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = serde_json::from_str(&std::fs::read_to_string(root().join("tokens.json")).unwrap()).unwrap();
    let n = ids.len();
    Tensor::from_data(TensorData::new(ids, [1, n]), &Default::default())
}

/// The fixture Llama with peft's adapters `a`, `b` and `c`.
fn model() -> HfModel<B> {
    let mut m = HfModel::load(&root().join("models/llama"), &Default::default()).unwrap().0;
    for name in ["a", "b", "c"] {
        load_adapter(&mut m, &case().join(name), name).unwrap();
    }
    m
}

/// Largest difference between the model's logits and peft's with combination `name` active.
fn off_peft(m: &HfModel<B>, name: &str) -> f32 {
    let bytes = read_bytes(&case().join("expected.safetensors")).unwrap();
    let theirs = to_f32(name, &parse(&bytes, name).unwrap().tensor(name).unwrap()).unwrap();
    let ours = m.forward(tokens()).into_data().into_vec::<f32>().unwrap();
    ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn cat_svd_ties_and_magnitude_pruning_match_peft() {
    let mut m = model();
    let base = {
        let mut plain = m.clone();
        plain.set_active_adapters(&[]).unwrap();
        plain.forward(tokens()).into_data().into_vec::<f32>().unwrap()
    };
    let parts = [("a", 0.7), ("b", -0.4)];
    let equal_ranks = [("a", 0.7), ("c", -0.4)];
    let combinations = [
        ("cat", &parts, Combination::Cat),
        ("svd", &parts, Combination::Svd { rank: None }),
        ("svd_rank3", &parts, Combination::Svd { rank: Some(3) }),
        ("ties", &equal_ranks, Combination::Ties { density: 0.5, majority_sign: MajoritySign::Total }),
        ("ties_frequency", &equal_ranks, Combination::Ties { density: 0.7, majority_sign: MajoritySign::Frequency }),
        ("magnitude_prune", &equal_ranks, Combination::MagnitudePrune { density: 0.5 }),
    ];
    for (name, parts, how) in combinations {
        m.add_weighted_adapter(parts, name, how).unwrap();
        let off = off_peft(&m, name);
        let ours = m.forward(tokens()).into_data().into_vec::<f32>().unwrap();
        let effect = ours.iter().zip(&base).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        println!("{name}: {off:.2e} from peft (the combination moves the logits by up to {effect:.2e})");
        assert!(off < 1e-5 && effect > 1e-2, "{name}: {off} from peft, effect {effect}");
    }
    // The default rank is the largest of the parts; rank 6 = 4 + 2 is the whole update, as Cat.
    let ranks = |m: &mut HfModel<B>, name: &str| m.adapter_tensors(name).unwrap().values().map(|p| p["a"].shape[1]).collect::<Vec<_>>();
    assert!(ranks(&mut m, "svd").iter().all(|&r| r == 4));
    m.add_weighted_adapter(&parts, "svd_full", Combination::Svd { rank: Some(6) }).unwrap();
    let full = m.forward(tokens()).into_data().into_vec::<f32>().unwrap();
    m.set_active_adapters(&["cat"]).unwrap();
    let cat = m.forward(tokens()).into_data().into_vec::<f32>().unwrap();
    let gap = full.iter().zip(&cat).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(gap < 1e-6, "a full-rank SVD combination differs from Cat by {gap}");
}

#[test]
fn svd_ranks_outside_the_layer_are_typed_errors_and_change_nothing() {
    let mut m = model();
    let before = m.adapter_names();
    match m.add_weighted_adapter(&[("a", 1.0), ("b", 1.0)], "big", Combination::Svd { rank: Some(17) }) {
        Err(PeftError::RankTooLarge { path, rank: 17, max: 16 }) => assert!(path.ends_with("v_proj"), "{path}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(m.add_weighted_adapter(&[("a", 1.0)], "none", Combination::Svd { rank: Some(0) }), Err(PeftError::ZeroRank { .. })));
    assert_eq!(m.adapter_names(), before);
    // TIES and magnitude pruning combine factors: equal ranks only, density in [0, 1].
    let ties = |density| Combination::Ties { density, majority_sign: MajoritySign::Total };
    assert!(matches!(m.add_weighted_adapter(&[("a", 1.0), ("b", 1.0)], "t", ties(0.5)), Err(PeftError::InvalidConfig(_))));
    assert!(matches!(m.add_weighted_adapter(&[("a", 1.0), ("c", 1.0)], "t", ties(1.5)), Err(PeftError::InvalidConfig(_))));
    assert_eq!(m.adapter_names(), before);
}

#[test]
fn dare_is_seeded_per_layer_and_without_pruning_is_linear_or_ties() {
    let mut m = model();
    let parts = [("a", 0.7), ("c", 0.4)];
    let tensors = |m: &mut HfModel<B>, name: &str| m.adapter_tensors(name).unwrap();
    let values = |t: &burn::tensor::TensorData| t.clone().into_vec::<f32>().unwrap();
    // Density 1 keeps every value: DARE is Linear, DARE-TIES is TIES.
    m.add_weighted_adapter(&parts, "linear", Combination::Linear).unwrap();
    m.add_weighted_adapter(&parts, "dare_all", Combination::DareLinear { density: 1.0, seed: 3 }).unwrap();
    m.add_weighted_adapter(&parts, "ties_all", Combination::Ties { density: 1.0, majority_sign: MajoritySign::Total }).unwrap();
    m.add_weighted_adapter(&parts, "dare_ties_all", Combination::DareTies { density: 1.0, majority_sign: MajoritySign::Total, seed: 3 }).unwrap();
    let (linear, dare) = (tensors(&mut m, "linear"), tensors(&mut m, "dare_all"));
    for (path, params) in &linear {
        for (name, t) in params {
            let gap = values(t).iter().zip(values(&dare[path][name])).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(gap < 1e-6, "{path}.{name}: {gap}");
        }
    }
    assert_eq!(tensors(&mut m, "ties_all"), tensors(&mut m, "dare_ties_all"));
    // A seed gives one adapter; another seed another; each layer has its own mask.
    m.add_weighted_adapter(&parts, "d1", Combination::DareLinear { density: 0.3, seed: 5 }).unwrap();
    m.add_weighted_adapter(&parts, "d2", Combination::DareLinear { density: 0.3, seed: 5 }).unwrap();
    m.add_weighted_adapter(&parts, "d3", Combination::DareLinear { density: 0.3, seed: 6 }).unwrap();
    let (d1, d2, d3) = (tensors(&mut m, "d1"), tensors(&mut m, "d2"), tensors(&mut m, "d3"));
    assert_eq!(d1, d2);
    assert_ne!(d1, d3);
    let zeros = |t: &burn::tensor::TensorData| values(t).iter().map(|v| *v == 0.0).collect::<Vec<_>>();
    let q0 = &d1["model.layers.0.self_attn.q_proj"]["a"];
    let q1 = &d1["model.layers.1.self_attn.q_proj"]["a"];
    assert_ne!(zeros(q0), zeros(q1), "two layers pruned alike");
    // About a share `density` of each part survives: with two parts, 1 − 0.7² ≈ 51 % of the sums.
    let kept = zeros(q0).iter().filter(|z| !**z).count() as f64 / q0.num_elements() as f64;
    assert!((0.35..0.67).contains(&kept), "{kept}");
    assert!(matches!(m.add_weighted_adapter(&parts, "bad", Combination::DareLinear { density: 0.0, seed: 1 }), Err(PeftError::InvalidConfig(_))));
}
