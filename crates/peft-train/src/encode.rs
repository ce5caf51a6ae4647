//! From examples to tokens: what the model reads and which tokens the loss covers.
//!
//! - Chat and instruction data: `prompt = template(messages[:-1], add_generation_prompt)`,
//!   `full = template(messages)`; the loss covers the tokens of `full` after those of `prompt`
//!   (the completion, its end-of-turn token included), as TRL's prompt/completion training does.
//! - Prompt/completion text: `prompt`, and `prompt + completion + eos`; the loss covers the tokens
//!   after the prompt's.
//! - Plain text: `text + eos`, every token.
//! - Text and label (sequence classification): the text with the tokenizer's special tokens, as
//!   transformers' `tokenizer(text)`; the loss is the cross-entropy of the label.
//!
//! Templates render special tokens as text, so text is tokenized without adding special tokens.
//! With `train_on_prompt` the loss covers every token.

use std::path::Path;

use peft_core::{PeftError, Result};
use tokenizers::Tokenizer;

use crate::{ChatTemplate, Message, Record};

/// One tokenized example.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Whether each token is a target of the loss (predicted from the tokens before it).
    pub targets: Vec<bool>,
    /// The class of a text to classify (task `seq-cls`); then no token is a target.
    pub label: Option<usize>,
}

impl Encoded {
    /// Predictions the loss covers: tokens, or the one class.
    pub fn target_count(&self) -> usize {
        if self.label.is_some() {
            return 1;
        }
        self.targets.iter().skip(1).filter(|t| **t).count()
    }
}

/// A model's tokenizer and chat template, and the loss semantics above.
#[derive(Debug)]
pub struct Encoder {
    /// The tokenizer (`tokenizer.json`).
    pub tokenizer: Tokenizer,
    /// The chat template.
    pub template: ChatTemplate,
    /// Text of the end-of-sequence token, when the model has one.
    pub eos: Option<String>,
    /// Text of the padding token, when the model has one.
    pub pad: Option<String>,
    /// Whether the loss also covers prompts.
    pub train_on_prompt: bool,
}

impl Encoder {
    /// The tokenizer and template of the model in `dir` (`tokenizer.json`, `tokenizer_config.json`,
    /// `chat_template.jinja`); ChatML when the model has no template and `chatml_fallback`.
    pub fn from_model_dir(dir: &Path, chatml_fallback: bool) -> Result<Self> {
        let mut tokenizer = peft_models::text::load_tokenizer(dir)?;
        tokenizer.with_truncation(None).map_err(|e| PeftError::Tokenizer(e.to_string()))?;
        let template = ChatTemplate::from_model_dir(dir, chatml_fallback)?;
        let config_path = dir.join("tokenizer_config.json");
        let config: serde_json::Value = if config_path.exists() { peft_core::checkpoint::read_json(&config_path)? } else { serde_json::Value::Null };
        let token = |key: &str| Some(crate::template::special(&config, key)).filter(|t| !t.is_empty());
        let (eos, pad) = (token("eos_token"), token("pad_token"));
        Ok(Self { tokenizer, template, eos, pad, train_on_prompt: false })
    }

    /// The ids of `text`, without added special tokens.
    pub fn ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, false).map_err(|e| PeftError::Tokenizer(format!("cannot tokenize: {e}")))?.get_ids().to_vec())
    }

    /// The ids of `text` with the tokenizer's special tokens added, as transformers' `tokenizer(text)`.
    pub fn ids_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, true).map_err(|e| PeftError::Tokenizer(format!("cannot tokenize: {e}")))?.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, false).map_err(|e| PeftError::Tokenizer(format!("cannot decode: {e}")))
    }

    /// The id of a token given as text (`<|im_end|>`), when the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The padding token's id: the model's padding token, else its end-of-sequence token, else 0.
    pub fn pad_id(&self) -> u32 {
        [&self.pad, &self.eos].into_iter().flatten().find_map(|t| self.token_id(t)).unwrap_or(0)
    }

    /// The ids of the prompt that asks the model to answer `messages`.
    pub fn prompt(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.ids(&self.template.render(messages, true)?)
    }

    fn split(&self, prompt: Vec<u32>, full: Vec<u32>) -> Result<Encoded> {
        if full[..prompt.len().min(full.len())] != prompt[..] {
            return Err(PeftError::InvalidConfig("the tokens of the prompt are not the beginning of the tokens of the whole example; the loss cannot be limited to the completion".into()));
        }
        let targets = (0..full.len()).map(|i| self.train_on_prompt || i >= prompt.len()).collect();
        Ok(Encoded { ids: full, targets, label: None })
    }

    /// The tokens of `record` and the loss's targets.
    pub fn encode(&self, record: &Record) -> Result<Encoded> {
        let eos = self.eos.as_deref().unwrap_or("");
        match record {
            Record::Text(text) => {
                let ids = self.ids(&format!("{text}{eos}"))?;
                Ok(Encoded { targets: vec![true; ids.len()], ids, label: None })
            }
            Record::Completion { prompt, completion } => self.split(self.ids(prompt)?, self.ids(&format!("{prompt}{completion}{eos}"))?),
            Record::Chat(messages) => {
                let prompt = self.template.render(&messages[..messages.len() - 1], true)?;
                self.split(self.ids(&prompt)?, self.ids(&self.template.render(messages, false)?)?)
            }
            // As transformers' `tokenizer(text)` for a classifier: with the special tokens.
            Record::Labeled { text, label } => {
                let ids = self.ids_with_special_tokens(text)?;
                Ok(Encoded { targets: vec![false; ids.len()], ids, label: Some(*label) })
            }
        }
    }
}
