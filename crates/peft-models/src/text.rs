//! Tokenizers from an HF checkpoint's `tokenizer.json`, through the `tokenizers` crate
//! (feature `text`).

use std::path::Path;

use peft_core::{PeftError, Result};
pub use tokenizers::Tokenizer;

/// Reads `dir/tokenizer.json`, without padding (the reference models take one unpadded sequence;
/// all-MiniLM-L6-v2's file pads to 128).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    peft_core::checkpoint::check_regular_file(&path)?;
    // tokenizers 0.22 panics on some malformed files (its decoder's deserializer unwraps).
    let read = std::panic::catch_unwind(|| Tokenizer::from_file(&path));
    let read = read.unwrap_or_else(|panic| Err(panic_message(panic).into()));
    let mut tokenizer = read.map_err(|e| PeftError::Tokenizer(format!("cannot read `{}`: {e}", path.display())))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
    format!("malformed ({})", what.unwrap_or_default())
}

/// Token ids of `text`, with the special tokens the tokenizer adds (`[CLS]`/`[SEP]` for BERT).
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tokenizer
        .encode(text, true)
        .map(|e| e.get_ids().to_vec())
        .map_err(|e| PeftError::Tokenizer(format!("cannot tokenize: {e}")))
}
