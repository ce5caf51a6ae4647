//! Prefix tuning (P-Tuning v2) for burn-peft: learned keys and values prepended in every
//! attention layer, attached at the key/value site of the one trait.
#![warn(missing_docs)]

mod config;
mod kv_site;
mod prefix;

pub use config::PrefixConfig;
pub use kv_site::KvSite;
pub use prefix::Prefix;

/// An attention layer's key/value site carrying named prefixes.
pub type PrefixKv<B> = peft_core::Tuned<B, KvSite, Prefix<B>>;
