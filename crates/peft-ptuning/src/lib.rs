//! Prefix tuning (P-Tuning v2) for burn-peft: learned keys and values prepended in every
//! attention layer, attached at the key/value site of the one trait.
//!
//! A model marks the point where its attention has projected keys and values with a
//! [`KvSite`] wrapped in `Tuned`; a [`PrefixConfig`] added through `PeftModel` puts a [`Prefix`]
//! there, and the attention masks the prefix as always visible. The reference models in
//! `peft-models` have the site in every layer; HF peft's `PREFIX_TUNING` folders load into it
//! through `peft-hf`. The facade crate `peft` re-exports this crate as `peft::ptuning`.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use peft_core::{PeftModel, Targeting, Tuned};
//! use peft_ptuning::{KvSite, Prefix, PrefixConfig};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Attention<B: burn::tensor::backend::Backend> {
//!     kv: Tuned<B, KvSite, Prefix<B>>,
//! }
//! peft_core::adaptable!(Attention { kv });
//!
//! let device = Default::default();
//! let mut attention = Attention::<NdArray> { kv: Tuned::new(KvSite { kv_heads: 2, head_dim: 8 }) };
//! attention.add_adapter("prefix", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3))?;
//! let keys = Tensor::<NdArray, 4>::zeros([1, 2, 5, 8], &device);
//! let (keys, values) = attention.kv.forward((keys.clone(), keys));
//! assert_eq!(keys.dims(), [1, 2, 3 + 5, 8]);
//! assert_eq!(values.dims(), [1, 2, 3 + 5, 8]);
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

mod config;
mod kv_site;
mod prefix;

pub use config::PrefixConfig;
pub use kv_site::KvSite;
pub use prefix::Prefix;

/// An attention layer's key/value site carrying named prefixes.
pub type PrefixKv<B> = peft_core::Tuned<B, KvSite, Prefix<B>>;
