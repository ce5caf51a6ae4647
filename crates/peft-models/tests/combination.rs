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
