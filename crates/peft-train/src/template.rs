//! Chat templates: a model's own Jinja `chat_template` (from `chat_template.jinja`, as
//! transformers 5 saves it, or from `tokenizer_config.json`), rendered as transformers'
//! `apply_chat_template` renders it, or ChatML when the model has none.

use std::path::Path;

use minijinja::{Environment, Error, ErrorKind, context};
use peft_core::{PeftError, Result};
use serde_json::Value;

use crate::Message;

/// ChatML, the fallback for models without a template (SmolLM2 and Qwen use it).
pub const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The most instructions one rendering may run.
pub const TEMPLATE_FUEL: u64 = 50_000_000;

/// A compiled chat template and the special tokens it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
    /// Whether this is the ChatML fallback rather than the model's own template.
    pub is_fallback: bool,
}

/// A special token of `tokenizer_config.json`: a string, or an object with `content`.
pub(crate) fn special(config: &Value, key: &str) -> String {
    match &config[key] {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("content").and_then(Value::as_str).unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

impl ChatTemplate {
    /// Compiles `source` with transformers' settings (`trim_blocks`, `lstrip_blocks`,
    /// Python's string methods, `raise_exception`).
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let mut env = Environment::new();
        // A template is a program from the model's files: bounded, it ends with an error instead
        // of running forever (real templates use a few hundred instructions per message).
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |message: String| -> std::result::Result<String, Error> { Err(Error::new(ErrorKind::InvalidOperation, message)) });
        env.add_template_owned("chat", source.to_string()).map_err(|e| PeftError::InvalidConfig(format!("chat template: {e}")))?;
        Ok(Self { env, bos_token: bos_token.into(), eos_token: eos_token.into(), is_fallback: false })
    }

    /// The template of the model in `dir`; ChatML when it has none and `fallback` allows it.
    pub fn from_model_dir(dir: &Path, fallback: bool) -> Result<Self> {
        let config_path = dir.join("tokenizer_config.json");
        let config: Value = if config_path.exists() { peft_core::checkpoint::read_json(&config_path)? } else { Value::Null };
        let jinja = dir.join("chat_template.jinja");
        let source = if jinja.exists() {
            Some(peft_core::checkpoint::read_text(&jinja)?)
        } else {
            match &config["chat_template"] {
                Value::String(s) => Some(s.clone()),
                // Several named templates: the default one.
                Value::Array(named) => named.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(String::from),
                _ => None,
            }
        };
        let (bos, eos) = (special(&config, "bos_token"), special(&config, "eos_token"));
        match source {
            Some(source) => Self::new(&source, &bos, &eos),
            None if fallback => Ok(Self { is_fallback: true, ..Self::new(CHATML, &bos, &eos)? }),
            None => Err(PeftError::InvalidConfig(format!("{} has no chat template (chat_template.jinja or tokenizer_config.json); allow the ChatML fallback to use chat data", dir.display()))),
        }
    }

    /// The text of `messages`, with the assistant's turn opened when `add_generation_prompt`.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template("chat").map_err(|e| PeftError::InvalidConfig(format!("chat template: {e}")))?;
        template
            .render(context! { messages => messages, add_generation_prompt => add_generation_prompt, bos_token => self.bos_token, eos_token => self.eos_token })
            .map_err(|e| PeftError::InvalidConfig(format!("chat template: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_chatml_with_python_methods_and_raises_errors() {
        let chat = [Message::new("user", "hi"), Message::new("assistant", "hello")];
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        assert_eq!(t.render(&chat, false).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n");
        assert_eq!(t.render(&chat[..1], true).unwrap(), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let strip = ChatTemplate::new("{{ bos_token }}{% for m in messages %}{{ m.content.strip().upper() }}{% endfor %}", "<s>", "</s>").unwrap();
        assert_eq!(strip.render(&[Message::new("user", "  x ")], false).unwrap(), "<s>X");
        let raising = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        assert!(raising.render(&chat, false).unwrap_err().to_string().contains("roles must alternate"));
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }

    #[test]
    fn hostile_templates_end_with_an_error() {
        let chat = [Message::new("user", "hi")];
        for source in [
            // Endless work: nested loops, recursion, huge strings.
            "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "{{ 'x' * 100000000000 }}",
        ] {
            let template = ChatTemplate::new(source, "", "").unwrap();
            assert!(template.render(&chat, false).is_err(), "{source}");
        }
    }
}
