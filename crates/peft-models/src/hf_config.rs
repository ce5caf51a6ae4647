//! `config.json` of the HF architectures the reference models implement.

use std::path::Path;

use peft_core::{PeftError, Result};
use serde::Deserialize;
use serde::de::DeserializeOwned;

fn parse<T: DeserializeOwned>(value: serde_json::Value, path: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|source| PeftError::Json { path: path.into(), source })
}

/// A parsed `config.json`, by `model_type`.
#[derive(Clone, Debug, PartialEq)]
pub enum HfModelConfig {
    /// `llama` (also Mistral-style decoders with the same layout).
    Llama(crate::llama::LlamaConfig),
    /// `gpt2`.
    Gpt2(crate::gpt2::Gpt2Config),
    /// `bert` (the encoder, `BertModel`).
    Bert(crate::bert::BertConfig),
}

impl HfModelConfig {
    /// Reads `dir/config.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        Self::from_value(peft_core::checkpoint::read_json(&path)?, &path.display().to_string())
    }

    /// Parses the text of a `config.json`; an unknown `model_type` is an error.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        Self::from_value(serde_json::from_str(text).map_err(|source| PeftError::Json { path: name.into(), source })?, name)
    }

    fn from_value(value: serde_json::Value, name: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Kind {
            model_type: String,
        }
        let kind: Kind = parse(value.clone(), name)?;
        match kind.model_type.as_str() {
            "llama" => Ok(Self::Llama(parse(value, name)?)),
            "gpt2" => Ok(Self::Gpt2(parse(value, name)?)),
            "bert" => Ok(Self::Bert(parse(value, name)?)),
            other => Err(PeftError::UnsupportedValue { key: "model_type".into(), value: other.into(), supported: format!("llama, gpt2, bert; read from {name}") }),
        }
    }

    /// A lower bound on the parameters the architecture holds (its embeddings and every layer's
    /// matrices), in checked arithmetic: `None` when it does not fit in 64 bits. A checkpoint of
    /// this config holds at least as many values, which [`crate::HfModel::load`] checks from the
    /// file's header before building anything.
    pub fn min_parameters(&self) -> Option<u64> {
        let n = |v: usize| v as u64;
        let product = |factors: &[u64]| factors.iter().try_fold(1u64, |p, &f| p.checked_mul(f));
        let sum = |terms: &[Option<u64>]| terms.iter().try_fold(0u64, |s, t| t.and_then(|t| s.checked_add(t)));
        match self {
            Self::Llama(c) => {
                let (h, q, kv) = (n(c.hidden_size), n(c.num_attention_heads).checked_mul(n(c.head_dim()))?, n(c.kv_heads()).checked_mul(n(c.head_dim()))?);
                let layer = sum(&[product(&[2, h, q]), product(&[2, h, kv]), product(&[3, h, n(c.intermediate_size)])]);
                sum(&[product(&[n(c.vocab_size), h]), layer.and_then(|l| l.checked_mul(n(c.num_hidden_layers)))])
            }
            Self::Gpt2(c) => {
                let h = n(c.n_embd);
                let inner = c.n_inner.map_or_else(|| h.checked_mul(4), |i| Some(n(i)))?;
                let layer = sum(&[product(&[4, h, h]), product(&[2, h, inner])]);
                sum(&[product(&[n(c.vocab_size), h]), product(&[n(c.n_positions), h]), layer.and_then(|l| l.checked_mul(n(c.n_layer)))])
            }
            Self::Bert(c) => {
                let h = n(c.hidden_size);
                let layer = sum(&[product(&[4, h, h]), product(&[2, h, n(c.intermediate_size)])]);
                let tables = n(c.vocab_size).checked_add(n(c.max_position_embeddings))?.checked_add(n(c.type_vocab_size))?;
                sum(&[tables.checked_mul(h), layer.and_then(|l| l.checked_mul(n(c.num_hidden_layers)))])
            }
        }
    }

    /// The `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Llama(_) => "llama",
            Self::Gpt2(_) => "gpt2",
            Self::Bert(_) => "bert",
        }
    }
}
