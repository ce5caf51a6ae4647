//! Prefix tuning (P-Tuning v2) for burn-peft: learned keys and values prepended in every
//! attention layer, attached at the key/value site of the one trait; and prompt tuning (Lester
//! et al.): learned embeddings of virtual tokens before the input, at the prompt site, optionally
//! through P-Tuning's MLP (Liu et al.).
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
//! use peft_ptuning::{AttentionKv, KvSite, Prefix, PrefixConfig};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Attention<B: burn::tensor::backend::Backend> {
//!     kv: Tuned<B, KvSite, Prefix<B>>,
//! }
//! peft_core::adaptable!(Attention { kv });
//!
//! let device = Default::default();
//! let mut attention = Attention::<NdArray> { kv: Tuned::new(KvSite { kv_heads: 2, head_dim: 8, input_dim: 16 }) };
//! attention.add_adapter("prefix", &PrefixConfig::new(Targeting::names(&["kv"])).with_num_virtual_tokens(3))?;
//! let keys = Tensor::<NdArray, 4>::zeros([1, 2, 5, 8], &device);
//! let input = Tensor::<NdArray, 3>::zeros([1, 5, 16], &device);
//! let (keys, values) = attention.kv.forward(AttentionKv::new(keys.clone(), keys, input));
//! assert_eq!(keys.dims(), [1, 2, 3 + 5, 8]);
//! assert_eq!(values.dims(), [1, 2, 3 + 5, 8]);
//! # Ok::<(), peft_core::PeftError>(())
//! ```
//!
//! A prompt goes where a model has embedded its tokens; the site's forward pass is HF peft's
//! `cat(prompts, inputs_embeds)` (the reference decoders instead run the virtual tokens once and
//! give every row their keys and values, with the same outputs):
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::Tensor;
//! use peft_core::{PeftModel, Targeting, Tuned};
//! use peft_ptuning::{PromptEmbedding, PromptSite, PromptTuningConfig};
//!
//! #[derive(burn::module::Module, Debug)]
//! struct Inputs<B: burn::tensor::backend::Backend> {
//!     prompt: Tuned<B, PromptSite, PromptEmbedding<B>>,
//! }
//! peft_core::adaptable!(Inputs { prompt });
//!
//! let mut inputs = Inputs::<NdArray> { prompt: Tuned::new(PromptSite { token_dim: 8 }) };
//! inputs.add_adapter("task", &PromptTuningConfig::new(Targeting::names(&["prompt"])).with_num_virtual_tokens(4))?;
//! let embedded = Tensor::<NdArray, 3>::zeros([2, 5, 8], &Default::default());
//! assert_eq!(inputs.prompt.forward(embedded).dims(), [2, 4 + 5, 8]);
//! # Ok::<(), peft_core::PeftError>(())
//! ```
#![warn(missing_docs)]

mod config;
mod example_prefixes;
mod kv_site;
mod prefix;
mod prefix_projection;
mod prompt;
mod prompt_site;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub use config::{MAX_LSTM_LAYERS, PrefixConfig, PrefixProjectionConfig, PromptEncoderConfig, PromptEncoderKind, PromptTuningConfig};
pub use example_prefixes::{RowPrefixes, prepend_prefixes, row_prefixes};
pub use kv_site::{AttentionKv, KvSite};
pub use prefix::Prefix;
pub use prefix_projection::{PrefixProjection, PrefixProjectionSite};
pub use prompt::{PromptEmbedding, PromptEncoder, PromptLstm, PromptMlp};
pub use prompt_site::PromptSite;

/// An attention layer's key/value site carrying named prefixes.
pub type PrefixKv<B> = peft_core::Tuned<B, KvSite, Prefix<B>>;

/// A model's prefix-projection site carrying named projected prefixes.
pub type ProjectedPrefix<B> = peft_core::Tuned<B, PrefixProjectionSite, PrefixProjection<B>>;

/// Every attention layer's `(keys, values)` `[1, kv_heads, tokens, head_dim]` from the live
/// projected prefixes at `site`, in order; `None` without one.
pub fn projected_keys_values<B: Backend>(site: &ProjectedPrefix<B>) -> Option<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> {
    let parts: Vec<Vec<(Tensor<B, 4>, Tensor<B, 4>)>> = site.live_adapters().map(|p| p.keys_values(&site.base)).collect();
    if parts.is_empty() {
        return None;
    }
    let layers = site.base.layers;
    Some((0..layers).map(|l| (Tensor::cat(parts.iter().map(|p| p[l].0.clone()).collect(), 2), Tensor::cat(parts.iter().map(|p| p[l].1.clone()).collect(), 2))).collect())
}

/// A model's prompt site carrying named prompts.
pub type PromptInput<B> = peft_core::Tuned<B, PromptSite, PromptEmbedding<B>>;

/// The virtual tokens of the live prompts at `site`, `[tokens, token_dim]`, in order; `None`
/// without a live prompt.
pub fn virtual_tokens<B: Backend>(site: &PromptInput<B>) -> Option<Tensor<B, 2>> {
    let prompts: Vec<Tensor<B, 2>> = site.live_adapters().map(PromptEmbedding::virtual_tokens).collect();
    (!prompts.is_empty()).then(|| Tensor::cat(prompts, 0))
}
