//! Batches and decoding of the reference decoders on the training-workflow fixtures (tiny random
//! Llama and GPT-2 made by `tools/make_train_fixtures.py`): a padded batch equals the sequences run
//! alone, packed sequences do not see each other, the key/value cache changes nothing, and greedy
//! decoding gives transformers' tokens, with and without an adapter.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::{PeftModel, Targeting};
use peft_models::{GenerationConfig, HfModel, Padding, TokenBatch, generate};
use peft_ptuning::{PrefixConfig, PrefixProjectionConfig, PromptTuningConfig};

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peft-train/tests/fixtures")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("expected.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

fn model(name: &str) -> HfModel<B> {
    HfModel::load(&root().join(name), &Default::default()).unwrap().0
}

/// The model with a prefix adapter, so that the prefix's positions and visibility are covered too.
fn with_prefix(mut m: HfModel<B>) -> HfModel<B> {
    m.add_adapter("prefix", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3).with_init_std(0.5)).unwrap();
    m
}

/// The model with a prompt-tuning adapter: its virtual tokens come before every sequence.
fn with_prompt(mut m: HfModel<B>) -> HfModel<B> {
    m.add_adapter("prompt", &PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(4).with_init_std(0.5)).unwrap();
    m
}

/// The model with a prefix made by peft's `prefix_projection` MLP.
fn with_projected_prefix(mut m: HfModel<B>) -> HfModel<B> {
    m.add_adapter("projected", &PrefixProjectionConfig::new(Targeting::names(&["prefix_projection"])).with_num_virtual_tokens(3).with_encoder_hidden_size(Some(16))).unwrap();
    m
}

fn single(m: &HfModel<B>, seq: &[u32]) -> Tensor<B, 3> {
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [1, seq.len()]), &Default::default());
    m.causal_lm().unwrap().logits(&TokenBatch::single(tokens, 0), None)
}

fn max_diff(a: Tensor<B, 3>, b: Tensor<B, 3>) -> f32 {
    (a - b).abs().max().into_scalar()
}

const SEQS: [&[u32]; 3] = [&[5, 17, 42, 8, 99, 3, 250], &[9, 4, 33], &[120, 7, 7, 61, 2]];

#[test]
fn a_padded_batch_equals_the_sequences_run_alone() {
    for m in [model("llama"), with_prefix(model("llama")), with_prompt(model("llama")), with_projected_prefix(model("llama")), model("gpt2"), with_prefix(model("gpt2")), with_prompt(model("gpt2")), with_projected_prefix(model("gpt2"))] {
        for side in [Padding::Right, Padding::Left] {
            let rows: Vec<Vec<&[u32]>> = SEQS.iter().map(|s| vec![*s]).collect();
            let batch = TokenBatch::new(&rows, 0, side, &Default::default());
            let out = m.causal_lm().unwrap().logits(&batch, None);
            let len = batch.dims()[1];
            for (i, seq) in SEQS.iter().enumerate() {
                let start = if side == Padding::Left { len - seq.len() } else { 0 };
                let row = out.clone().narrow(0, i, 1).narrow(1, start, seq.len());
                let diff = max_diff(row, single(&m, seq));
                assert!(diff < 1e-5, "{side:?} row {i}: {diff}");
            }
        }
    }
}

#[test]
fn a_prompt_made_from_tokens_is_those_tokens_before_the_input() {
    // Virtual tokens equal to the embeddings of real ones act as those tokens would: the logits of
    // a sequence after a prompt of [5, 17, 5, 17] (the text's ids repeated to 4) are the logits of
    // the same tokens after [5, 17, 5, 17] typed in.
    for name in ["llama", "gpt2"] {
        let mut m = with_prompt(model(name));
        m.init_prompt_from_tokens("prompt", &[5, 17]).unwrap();
        let plain = model(name);
        for seq in SEQS {
            let typed: Vec<u32> = [5, 17, 5, 17].iter().chain(seq.iter()).copied().collect();
            let after_typed = single(&plain, &typed).narrow(1, 4, seq.len());
            let diff = max_diff(single(&m, seq), after_typed);
            assert!(diff < 1e-5, "{name}: {diff}");
        }
    }
    let mut m = with_prompt(model("llama"));
    assert!(m.init_prompt_from_tokens("prompt", &[]).is_err());
    assert!(m.init_prompt_from_tokens("prompt", &[1_000_000]).is_err());
    assert!(m.init_prompt_from_tokens("other", &[5]).is_err());
}

#[test]
fn an_ejected_projected_prefix_gives_the_same_outputs_without_its_mlp() {
    for name in ["llama", "gpt2"] {
        let mut m = with_projected_prefix(model(name));
        let projected: Vec<Tensor<B, 3>> = SEQS.iter().map(|s| single(&m, s)).collect();
        let base = single(&model(name), SEQS[0]);
        assert!(max_diff(projected[0].clone(), base) > 1e-3, "{name}: the prefix changes nothing");
        m.eject_prefix_projection("projected").unwrap();
        let layers = m.tuned_layers();
        assert!(layers.iter().filter(|l| l.kind == peft_core::LayerKind::PrefixProjection).all(|l| l.adapters.is_empty()));
        assert!(layers.iter().filter(|l| l.kind == peft_core::LayerKind::KeyValue).all(|l| l.adapters == ["projected"]));
        for (seq, before) in SEQS.iter().zip(projected) {
            let diff = max_diff(single(&m, seq), before);
            assert!(diff < 1e-6, "{name}: {diff}");
        }
        assert!(m.eject_prefix_projection("projected").is_err(), "a plain prefix has nothing to eject");
    }
}

/// BERT takes a projected prefix too: every layer's keys and values from one MLP, and ejected,
/// the same outputs (a padded batch, so that the prefix's positions and the padding mask meet).
#[test]
fn bert_takes_a_projected_prefix_and_ejects_it() {
    let bert = || HfModel::<B>::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/models/bert"), &Default::default()).unwrap().0;
    let mut m = with_projected_prefix(bert());
    let tokens = Tensor::<B, 2, Int>::from_ints([[5, 17, 42, 8], [9, 4, 33, 0]], &Default::default());
    let padding = Tensor::<B, 2>::from_floats([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], &Default::default());
    let run = |m: &HfModel<B>| {
        let HfModel::Bert(bert) = m else { unreachable!() };
        bert.forward_padded(tokens.clone(), Some(padding.clone()))
    };
    let projected = run(&m);
    assert!(max_diff(projected.clone(), run(&bert())) > 1e-3, "the prefix changes nothing");
    m.eject_prefix_projection("projected").unwrap();
    let diff = max_diff(run(&m), projected);
    assert!(diff < 1e-6, "ejected: {diff}");
}

#[test]
fn packed_sequences_do_not_see_each_other() {
    for m in [model("llama"), model("gpt2"), with_prompt(model("llama")), with_prompt(with_prefix(model("gpt2")))] {
        let rows = vec![vec![SEQS[0], SEQS[1]], vec![SEQS[2]]];
        let out = m.causal_lm().unwrap().logits(&TokenBatch::new(&rows, 0, Padding::Right, &Default::default()), None);
        let first = max_diff(out.clone().narrow(0, 0, 1).narrow(1, 0, SEQS[0].len()), single(&m, SEQS[0]));
        let second = max_diff(out.clone().narrow(0, 0, 1).narrow(1, SEQS[0].len(), SEQS[1].len()), single(&m, SEQS[1]));
        let third = max_diff(out.narrow(0, 1, 1).narrow(1, 0, SEQS[2].len()), single(&m, SEQS[2]));
        assert!(first < 1e-5 && second < 1e-5 && third < 1e-5, "{first} {second} {third}");
    }
}

#[test]
fn the_cache_changes_nothing_greedy_or_sampled() {
    let prompt = ids(&expected()["generate"]["prompt_ids"]);
    for m in [model("llama"), with_prefix(model("llama")), with_prompt(model("llama")), with_projected_prefix(model("llama")), model("gpt2"), with_prompt(with_projected_prefix(model("gpt2")))] {
        for (temperature, top_p) in [(0.0, 1.0), (0.8, 0.9)] {
            let config = GenerationConfig { max_new_tokens: 10, temperature, top_p, seed: 7, ..Default::default() };
            let cached = generate(m.causal_lm().unwrap(), &prompt, &config, &Default::default()).unwrap();
            let uncached = generate(m.causal_lm().unwrap(), &prompt, &GenerationConfig { use_cache: false, ..config }, &Default::default()).unwrap();
            assert_eq!(cached, uncached, "temperature {temperature}");
            assert_eq!(cached.len(), 10);
        }
    }
}

#[test]
fn greedy_decoding_gives_transformers_tokens_with_and_without_an_adapter() {
    let e = expected();
    let prompt = ids(&e["generate"]["prompt_ids"]);
    let eos = e["eos_id"].as_u64().unwrap() as u32;
    let config = GenerationConfig { max_new_tokens: 12, stop: vec![eos], ..Default::default() };
    let mut adapted = model("llama");
    peft_hf::load_adapter(&mut adapted, &root().join("adapter"), "task").unwrap();
    for (name, m) in [("llama", model("llama")), ("llama_adapter", adapted), ("gpt2", model("gpt2"))] {
        let ours = generate(m.causal_lm().unwrap(), &prompt, &config, &Default::default()).unwrap();
        assert_eq!(ours, ids(&e["generate"][name]), "{name}");
    }
}

#[test]
fn generation_refuses_bad_settings_and_encoders() {
    let m = model("llama");
    for config in [GenerationConfig { temperature: -1.0, ..Default::default() }, GenerationConfig { top_p: 0.0, ..Default::default() }] {
        assert!(generate(m.causal_lm().unwrap(), &[1, 2], &config, &Default::default()).is_err());
    }
    assert!(generate(m.causal_lm().unwrap(), &[], &GenerationConfig::default(), &Default::default()).is_err());
    let bert = HfModel::<B>::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/models/bert"), &Default::default()).unwrap().0;
    assert!(bert.causal_lm().is_err());
}

#[test]
fn a_quantized_model_stays_near_the_dense_one_and_decodes_the_same_with_the_cache() {
    let dense = model("llama");
    let mut quantized = model("llama");
    // Every linear layer but the head: 2 layers × (q, k, v, o, gate, up, down).
    assert_eq!(quantized.quantize(peft_quant::QuantConfig::qlora()).unwrap(), 14);
    let (a, b) = (single(&dense, SEQS[0]), single(&quantized, SEQS[0]));
    let scale = a.clone().abs().max().into_scalar();
    let diff = max_diff(a, b);
    println!("NF4 base: largest logit difference {diff:.3e} of {scale:.3e}");
    assert!(diff > 0.0 && diff < 0.1 * scale, "{diff} of {scale}");
    let prompt = ids(&expected()["generate"]["prompt_ids"]);
    let config = GenerationConfig { max_new_tokens: 8, ..Default::default() };
    let cached = generate(quantized.causal_lm().unwrap(), &prompt, &config, &Default::default()).unwrap();
    let uncached = generate(quantized.causal_lm().unwrap(), &prompt, &GenerationConfig { use_cache: false, ..config }, &Default::default()).unwrap();
    assert_eq!(cached, uncached);
}
