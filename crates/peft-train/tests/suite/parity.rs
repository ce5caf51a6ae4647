//! The workflow's semantics against transformers and peft, on the fixtures of
//! `tools/make_train_fixtures.py`: chat templates render as `apply_chat_template` does, token ids
//! are the tokenizer's, and the eval loss with the completion-only masking of docs/training.md
//! equals transformers + peft's on the same masking.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use peft_models::HfModel;
use peft_train::{Dataset, Encoded, Encoder, Record, evaluate};

use crate::turn;

type B = NdArray;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("expected.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect()
}

#[test]
fn chat_templates_and_token_ids_equal_transformers() {
    let _turn = turn();
    let encoder = Encoder::from_model_dir(&root().join("llama"), false).unwrap();
    assert!(!encoder.template.is_fallback);
    let data = Dataset::read(&root().join("data/chat.jsonl"), false).unwrap();
    let e = expected();
    let templates = e["templates"].as_array().unwrap();
    assert_eq!(data.records.len(), templates.len());
    for (record, want) in data.records.iter().zip(templates) {
        let Record::Chat(messages) = record else { panic!("not a chat: {record:?}") };
        assert_eq!(encoder.template.render(&messages[..messages.len() - 1], true).unwrap(), want["prompt"].as_str().unwrap());
        assert_eq!(encoder.template.render(messages, false).unwrap(), want["full"].as_str().unwrap());
        let encoded = encoder.encode(record).unwrap();
        assert_eq!(encoded.ids, ids(&want["full_ids"]));
        let prompt_len = ids(&want["prompt_ids"]).len();
        assert!(encoded.targets.iter().enumerate().all(|(i, t)| *t == (i >= prompt_len)));
    }
}

#[test]
fn eval_loss_equals_transformers_and_peft_with_the_same_masking() {
    let _turn = turn();
    let e = expected();
    let encoder = Encoder::from_model_dir(&root().join("llama"), false).unwrap();
    let pad = e["pad_id"].as_u64().unwrap() as u32;
    let device = Default::default();
    let base = HfModel::<B>::load(&root().join("llama"), &device).unwrap().0;
    let mut adapted = base.clone();
    peft_hf::load_adapter(&mut adapted, &root().join("adapter"), "task").unwrap();
    let gpt2 = HfModel::<B>::load(&root().join("gpt2"), &device).unwrap().0;
    for name in ["chat", "alpaca", "prompt_completion", "text"] {
        let data = Dataset::read(&root().join(format!("data/{name}.jsonl")), false).unwrap();
        let examples: Vec<Encoded> = data.records.iter().map(|r| encoder.encode(r).unwrap()).collect();
        let mut cases = vec![("base", &base), ("adapter", &adapted)];
        if name == "prompt_completion" {
            cases.push(("gpt2", &gpt2));
        }
        for (case, model) in cases {
            let want = &e["eval"][name][case];
            // Batches of 3 with padding: the loss is token-weighted over the whole set either way.
            let ours = evaluate(model.causal_lm().unwrap(), &examples, 3, pad, &device);
            assert_eq!(ours.tokens as u64, want["tokens"].as_u64().unwrap(), "{name} {case}");
            let diff = (ours.loss - want["loss"].as_f64().unwrap()).abs();
            assert!(diff < 1e-4, "{name} {case}: loss {} vs transformers {} ({diff:e})", ours.loss, want["loss"]);
            println!("{name} {case}: loss {:.6} ({diff:.1e} from transformers), {} tokens", ours.loss, ours.tokens);
        }
    }
}
