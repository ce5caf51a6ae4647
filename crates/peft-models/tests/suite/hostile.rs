//! A `config.json` that does not belong to its checkpoint is refused from the checkpoint's
//! header, in milliseconds and without building the model: huge dimensions, huge layer counts,
//! dimensions whose product overflows.

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use peft_core::PeftError;
use peft_models::HfModel;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/models").join(name)
}

/// A copy of the fixture model `name` whose `config.json` has `key` set to `value`.
fn with_config(name: &str, key: &str, value: serde_json::Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("peft-hostile-{name}-{key}-{}-{}", value.to_string().len(), std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture(name);
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    dir
}

#[test]
fn huge_dimensions_are_refused_from_the_header() {
    let cases: &[(&str, &[&str])] = &[
        ("llama", &["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim"]),
        ("gpt2_f16", &["vocab_size", "n_embd", "n_inner", "n_layer", "n_positions"]),
        ("bert", &["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "max_position_embeddings", "type_vocab_size"]),
    ];
    for (model, keys) in cases {
        for key in *keys {
            for value in [30_000_000u64, 1_000_000_000, 1 << 53, u64::MAX] {
                let dir = with_config(model, key, value.into());
                match HfModel::<NdArray>::load(&dir, &Default::default()) {
                    Err(PeftError::CheckpointTooSmall { .. } | PeftError::InvalidConfig(_)) => {}
                    Err(e) => panic!("{model} {key}={value}: an unexpected error: {e}"),
                    Ok(_) => panic!("{model} {key}={value}: loaded"),
                }
                std::fs::remove_dir_all(&dir).unwrap();
            }
        }
    }
}

/// Burn's `RmsNorm` asserts a positive epsilon: a config with another one is refused before.
#[test]
fn a_norm_epsilon_that_is_not_positive_is_refused() {
    for value in [serde_json::json!(0.0), serde_json::json!(-1e-6)] {
        let dir = with_config("llama", "rms_norm_eps", value.clone());
        match HfModel::<NdArray>::load(&dir, &Default::default()) {
            Err(PeftError::InvalidConfig(message)) => assert!(message.contains("rms_norm_eps"), "{message}"),
            other => panic!("rms_norm_eps={value}: {:?}", other.map(|_| ())),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A zero width makes every layer parameter-free, so the checkpoint's size would not bound the
/// layer count: refused before anything is built (found by the fuzz harness: 5.9 TB asked for).
#[test]
fn a_zero_width_with_a_huge_layer_count_is_refused() {
    for (model, width, layers) in [("llama", "hidden_size", "num_hidden_layers"), ("gpt2_f16", "n_embd", "n_layer"), ("bert", "hidden_size", "num_hidden_layers")] {
        let dir = with_config(model, width, 0.into());
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        config[layers] = 10_000_000_000u64.into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        match HfModel::<NdArray>::load(&dir, &Default::default()) {
            Err(PeftError::InvalidConfig(_)) => {}
            other => panic!("{model}: {:?}", other.map(|_| ())),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn the_fixtures_still_load() {
    for model in ["llama", "gpt2_f16", "bert", "llama_tied_bf16"] {
        HfModel::<NdArray>::load(&fixture(model), &Default::default()).unwrap_or_else(|e| panic!("{model}: {e}"));
    }
}
