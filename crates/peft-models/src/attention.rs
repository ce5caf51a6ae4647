//! Pieces the reference transformers share: the linear-layer slot generic over its method,
//! multi-head attention with grouped keys/values and a prefix site, masks and positions.

use burn::module::Module;
use burn::nn::{Initializer, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use peft_core::{Tuned, Tuner, TunerForward};
use peft_ptuning::{AttentionKv, KvSite, PrefixKv, PrefixProjectionSite, ProjectedPrefix, PromptInput, PromptSite, RowPrefixes, prepend_prefixes, row_prefixes};
use peft_quant::BaseLinear;
use peft_quant::backend::QuantLinearBackend;
use peft_quant::fused::{FusedOps, fused_attention};

use crate::batch::KvCache;

/// A method for the models' linear layers (LoRA, DoRA, IA3, or `WeightAdapter` for both), on a
/// dense or 4-bit base.
pub trait LinearTuner<B: Backend>: Tuner<B, BaseLinear<B>> {}
impl<B: Backend, T: Tuner<B, BaseLinear<B>>> LinearTuner<B> for T {}

/// A [`LinearTuner`] with its forward pass, on a backend that runs 4-bit products too.
pub trait LinearAdapter<B: QuantLinearBackend>: LinearTuner<B> + TunerForward<B, BaseLinear<B>, Tensor<B, 3>> {}
impl<B: QuantLinearBackend, T: LinearTuner<B> + TunerForward<B, BaseLinear<B>, Tensor<B, 3>>> LinearAdapter<B> for T {}

/// A linear layer, dense or 4-bit, carrying adapters of method `T`.
pub type AdaptedLinear<B, T> = Tuned<B, BaseLinear<B>, T>;

/// A zero-initialised dense linear layer (weights are loaded afterwards), wrapped.
pub(crate) fn linear<B: Backend, T: Module<B>>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> AdaptedLinear<B, T> {
    Tuned::new(BaseLinear::Dense(LinearConfig::new(d_in, d_out).with_bias(bias).with_initializer(Initializer::Zeros).init(device)))
}

/// The weight `[d_in, d_out]` of `layer` when its output is exactly `x · weight`: dense, without
/// a bias or a live adapter.
pub(crate) fn plain_weight<B: Backend, T: LinearTuner<B>>(layer: &AdaptedLinear<B, T>) -> Option<Tensor<B, 2>> {
    let dense = layer.base.dense().filter(|l| l.bias.is_none())?;
    layer.live_adapters().next().is_none().then(|| dense.weight.val())
}

/// A key/value site for `kv_heads` heads of width `head_dim`, in an attention layer whose input
/// has width `input_dim`.
pub(crate) fn kv_site<B: Backend>(kv_heads: usize, head_dim: usize, input_dim: usize) -> PrefixKv<B> {
    Tuned::new(KvSite { kv_heads, head_dim, input_dim })
}

/// Number of prefix positions the site adds in the forward pass (0 without a live prefix; with
/// per-example prefixes, the longest a row uses).
pub fn prefix_len<B: Backend>(kv: &PrefixKv<B>) -> usize {
    match row_prefixes(kv) {
        Some(rows) => rows.width,
        None => kv.live_adapters().map(|p| p.len()).sum(),
    }
}

/// Token positions `[batch, seq]` of a pass with per-example prefixes: each row's moved back by
/// the prefix positions its own prefix leaves empty, so that its tokens follow its prefix as
/// they do when the row runs alone.
pub(crate) fn row_positions<B: Backend>(positions: Tensor<B, 2, Int>, rows: Option<&RowPrefixes>) -> Tensor<B, 2, Int> {
    let Some(rows) = rows else { return positions };
    let [batch, _] = positions.dims();
    let empty: Vec<i64> = rows.empty().map(|e| e as i64).collect();
    let empty = Tensor::<B, 1, Int>::from_data(TensorData::new(empty, [batch]), &positions.device());
    positions - empty.unsqueeze_dim(1)
}

/// The attention bias `[batch, 1, queries, prefix + keys]` with the prefix positions each row's
/// own prefix leaves empty hidden (per-example prefixes; see [`peft_ptuning::RowPrefixes`]).
pub(crate) fn hide_empty_prefix<B: Backend>(bias: Tensor<B, 4>, rows: Option<&RowPrefixes>) -> Tensor<B, 4> {
    let Some(rows) = rows else { return bias };
    let [batch, _, queries, keys] = bias.dims();
    let hidden: Vec<bool> = rows.empty().flat_map(|e| (0..keys).map(move |j| j < e)).collect();
    let hidden = Tensor::<B, 2, Bool>::from_data(TensorData::new(hidden, [batch, keys]), &bias.device());
    bias.mask_fill(hidden.reshape([batch, 1, 1, keys]).expand([batch, 1, queries, keys]), -1e9)
}

/// A decoder's prompt site for embeddings of width `d`.
pub(crate) fn prompt_site<B: Backend>(d: usize) -> PromptInput<B> {
    Tuned::new(PromptSite { token_dim: d })
}

/// Number of virtual tokens the live prompts put before the tokens (0 without one).
pub fn prompt_len<B: Backend>(prompt: &PromptInput<B>) -> usize {
    prompt.live_adapters().map(|p| p.len()).sum()
}

/// A decoder's prefix-projection site for `layers` attention layers of `kv_heads` heads of width
/// `head_dim`.
pub(crate) fn projection_site<B: Backend>(layers: usize, kv_heads: usize, head_dim: usize) -> ProjectedPrefix<B> {
    Tuned::new(PrefixProjectionSite { layers, kv_heads, head_dim })
}

/// Number of prefix tokens the live projected prefixes put before the tokens.
pub fn projected_len<B: Backend>(site: &ProjectedPrefix<B>) -> usize {
    site.live_adapters().map(|p| p.len()).sum()
}

/// A layer's keys and values `kv` with its prefixes before them: a projected prefix's (`projected`,
/// this layer's part), then the layer's own (its key/value site `kv_site`).
pub(crate) fn with_prefixes<B: Backend>(kv_site: &PrefixKv<B>, projected: Option<&(Tensor<B, 4>, Tensor<B, 4>)>, kv: AttentionKv<B>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let kv = prepend_prefixes(kv_site, kv);
    match projected {
        Some(p) => prepend_keys_values(p, kv),
        None => kv,
    }
}

/// What a pass attends to in layer `layer`: the keys and values that come first (a prompt pass's,
/// which hold the prefixes, or else the layer's prefixes), then the pass's own `kv`; with a
/// cache, those of the tokens before (the first entry made so) and this pass's added to it.
pub(crate) fn pass_keys_values<B: Backend>(
    layer: usize,
    kv_site: &PrefixKv<B>,
    projected: Option<&[(Tensor<B, 4>, Tensor<B, 4>)]>,
    prompt: Option<&[(Tensor<B, 4>, Tensor<B, 4>)]>,
    cache: Option<&mut KvCache<B>>,
    kv: AttentionKv<B>,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let AttentionKv { keys, values, input } = kv;
    let first = |(k, v)| match prompt {
        Some(prompt) => prepend_keys_values(&prompt[layer], (k, v)),
        None => with_prefixes(kv_site, projected.map(|p| &p[layer]), AttentionKv::new(k, v, input)),
    };
    match cache {
        Some(cache) => cache.append(layer, keys, values, first),
        None => first((keys, values)),
    }
}

/// A layer's keys and values `[1, kv_heads, n, hd]` that come first (a projected prefix's, or a
/// prompt's from the pass over its virtual tokens), before `(k, v)` `[batch, kv_heads, seq, hd]`.
pub(crate) fn prepend_keys_values<B: Backend>(prompt: &(Tensor<B, 4>, Tensor<B, 4>), (k, v): (Tensor<B, 4>, Tensor<B, 4>)) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, heads, _, hd] = k.dims();
    let expand = |p: &Tensor<B, 4>| {
        let n = p.dims()[2];
        p.clone().expand([batch, heads, n, hd])
    };
    (Tensor::cat(vec![expand(&prompt.0), k], 2), Tensor::cat(vec![expand(&prompt.1), v], 2))
}

/// `[batch, seq, heads * head_dim] -> [batch, heads, seq, head_dim]`.
pub fn split_heads<B: Backend>(x: Tensor<B, 3>, heads: usize) -> Tensor<B, 4> {
    let [batch, seq, width] = x.dims();
    x.reshape([batch, seq, heads, width / heads]).swap_dims(1, 2)
}

/// Scaled dot-product attention. `q [batch, heads, seq, hd]`, `k`/`v [batch, kv_heads, total, hd]`
/// (`total - seq` prefix positions first; each kv head serves `heads / kv_heads` query heads);
/// `bias` (from [`crate::batch::attention_bias`], built once per forward pass) is added to the
/// scores. Returns `[batch, seq, heads * hd]`. The core is [`fused_attention`] (one backward
/// node that recomputes the probabilities rather than keeping them).
pub fn attend<B: FusedOps>(q: Tensor<B, 4>, k: Tensor<B, 4>, v: Tensor<B, 4>, bias: Option<&Tensor<B, 4>>) -> Tensor<B, 3> {
    let [batch, heads, seq, hd] = q.dims();
    fused_attention(q, k, v, bias.cloned()).swap_dims(1, 2).reshape([batch, seq, heads * hd])
}
