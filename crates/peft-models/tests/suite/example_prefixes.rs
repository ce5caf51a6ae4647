//! Per-example prefixes in one batch: rows with prefixes of different lengths (one gated), with
//! LoRA and with none, each get what they get alone on Llama, GPT-2 and BERT, also through a
//! key/value cache; in training a prefix learns from its own rows only.

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::Tensor;
use peft_core::{PeftError, PeftModel, Targeting};
use peft_lora::LoraConfig;
use peft_models::{HfModel, TokenBatch};
use peft_ptuning::{PrefixConfig, PromptTuningConfig};

use crate::example_adapters::{batch, set_values};

type B = NdArray;

/// The fixture `name` with prefixes `p2` (2 tokens), `p5` (5) and `g3` (3, gated), and on Llama
/// LoRA `a` on q/v; every adapter value set ([`set_values`]).
fn with_prefixes<B2: peft_quant::backend::QuantLinearBackend>(name: &str) -> HfModel<B2> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/models").join(name);
    let mut m = HfModel::<B2>::load(&dir, &Default::default()).unwrap().0;
    m.add_adapter("p2", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(2)).unwrap();
    m.add_adapter("p5", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(5)).unwrap();
    m.add_adapter("g3", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3).with_gating(true)).unwrap();
    let mut names = vec!["p2", "p5", "g3"];
    if name == "llama" {
        m.add_adapter("a", &LoraConfig::new(Targeting::names(&["q_proj", "v_proj"])).with_r(2)).unwrap();
        names.push("a");
    }
    set_values(&mut m, &names);
    m
}

/// The largest difference between row `r` of `mixed` and `alone`.
fn row_diff(mixed: &Tensor<B, 3>, r: usize, alone: Tensor<B, 3>) -> f32 {
    (mixed.clone().narrow(0, r, 1) - alone).abs().max().into_scalar()
}

/// `m` with only `name` active (none: adapters disabled).
fn alone(model: &str, name: Option<&str>) -> HfModel<B> {
    let mut m = with_prefixes::<B>(model);
    match name {
        Some(n) => m.set_active_adapters(&[n]).unwrap(),
        None => m.disable_adapters().unwrap(),
    }
    m
}

#[test]
fn each_row_gets_its_own_prefix_on_every_reference_model() {
    for (model, rows) in [
        ("llama", [Some("p5"), None, Some("p2"), Some("a"), Some("g3")]),
        ("gpt2_f16", [Some("p2"), Some("p5"), None, Some("g3"), Some("p2")]),
        ("bert", [Some("g3"), Some("p5"), Some("p2"), None, Some("p5")]),
    ] {
        let mut m = with_prefixes::<B>(model);
        m.set_example_adapters(&rows).unwrap();
        assert_eq!(m.prefix_len(), 5, "{model}: the longest prefix a row uses");
        let mixed = m.forward(batch());
        let mut worst = 0.0f32;
        for (r, name) in rows.iter().enumerate() {
            let diff = row_diff(&mixed, r, alone(model, *name).forward(batch().narrow(0, r, 1)));
            assert!(diff <= 1e-6, "{model}: row {r} ({name:?}) differs from running it alone by {diff}");
            worst = worst.max(diff);
        }
        println!("{model}: mixed batch of prefixes 5, 3 (gated), 2 and none (and LoRA on Llama): largest difference {worst:.1e}");
    }
}

#[test]
fn a_cached_pass_keeps_each_rows_prefix() {
    // Ungated: a gate averages over the tokens of the pass that adds the prefix.
    let rows = [Some("p2"), Some("p5"), None, Some("a"), Some("p5")];
    let mut m = with_prefixes::<B>("llama");
    m.set_example_adapters(&rows).unwrap();
    let whole = m.forward(batch());
    let lm = m.causal_lm().unwrap();
    let mut cache = lm.new_cache();
    let first = lm.logits(&TokenBatch::single(batch().narrow(1, 0, 3), 0), Some(&mut cache));
    let rest = lm.logits(&TokenBatch::single(batch().narrow(1, 3, 2), 3), Some(&mut cache));
    let cached = Tensor::cat(vec![first, rest], 1);
    let diff: f32 = (cached - whole).abs().max().into_scalar();
    assert!(diff <= 1e-5, "a cached pass differs from the whole pass by {diff}");
}

#[test]
fn in_training_a_prefix_learns_from_its_own_rows() {
    type T = Autodiff<NdArray>;
    let mut m = with_prefixes::<T>("llama");
    m.set_example_adapters(&[Some("p5"), Some("p5"), None, Some("a"), None]).unwrap();
    let (p2, p5, a) = (m.adapter_tensors("p2").unwrap(), m.adapter_tensors("p5").unwrap(), m.adapter_tensors("a").unwrap());
    let loss = m.forward(batch()).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let mut m = SgdConfig::new().init::<T, HfModel<T>>().step(0.1, m, grads);
    assert_ne!(m.adapter_tensors("p5").unwrap(), p5, "prefix p5 learned nothing");
    assert_ne!(m.adapter_tensors("a").unwrap(), a, "LoRA a learned nothing");
    assert_eq!(m.adapter_tensors("p2").unwrap(), p2, "prefix p2, used by no row, changed");
    let _ = m.valid();
}

#[test]
fn prompts_named_by_a_row_are_refused() {
    let mut m = with_prefixes::<B>("llama");
    m.add_adapter("t", &PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(3)).unwrap();
    let err = m.set_example_adapters(&[Some("t"), Some("p2")]).unwrap_err();
    assert!(matches!(&err, PeftError::NotSupportedOn { feature, .. } if feature.contains("prompt")), "{err}");
}
