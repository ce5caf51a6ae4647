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

    /// The `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self {
            Self::Llama(_) => "llama",
            Self::Gpt2(_) => "gpt2",
            Self::Bert(_) => "bert",
        }
    }
}
