//! Prefix tuning (P-Tuning v2) for burn-peft: learned keys and values prepended in every
//! attention layer, attached at the key/value site of the one trait.
#![warn(missing_docs)]

mod prefix;

pub use prefix::{KvSite, Prefix, PrefixConfig};

/// An attention layer's key/value site carrying named prefixes.
pub type PrefixKv<B> = peft_core::Tuned<B, KvSite, Prefix<B>>;
