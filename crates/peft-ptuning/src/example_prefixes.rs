//! Per-example prefixes: each row of a batch with its own prefix, or none, in one pass.
//!
//! Rows whose prefixes differ in length still share one key length: every row's keys and values
//! get `width` prefix positions, the longest prefix a row uses; a row's own prefix fills the last
//! of them and zeros the rest. A model hides those empty positions from attention and starts the
//! row's tokens right after its own prefix ([`RowPrefixes`]), so that each row computes what it
//! computes alone.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use peft_core::{Rows, TunerForward};

use crate::{AttentionKv, PrefixKv};

/// How the rows of a batch fill the prefix positions before their keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowPrefixes {
    /// Prefix positions of every row: the longest prefix a row uses.
    pub width: usize,
    /// Positions each row's own prefix fills, the last ones (0: the row has none).
    pub filled: Vec<usize>,
}

impl RowPrefixes {
    /// Each row's leading prefix positions that its own prefix leaves empty.
    pub fn empty(&self) -> impl Iterator<Item = usize> + '_ {
        self.filled.iter().map(|f| self.width - f)
    }
}

/// With per-example adapters set on `site` (`PeftModel::set_example_adapters`) and a row with a
/// prefix, how the rows fill the prefix positions; `None` while every row shares the live
/// prefixes, or no row has one.
pub fn row_prefixes<B: Backend>(site: &PrefixKv<B>) -> Option<RowPrefixes> {
    let filled: Vec<usize> = site.example_adapters()?.iter().map(|p| p.map_or(0, |p| p.len())).collect();
    let width = filled.iter().copied().max().unwrap_or(0);
    (width > 0).then_some(RowPrefixes { width, filled })
}

/// The keys and values `[batch, kv_heads, prefix + seq, head_dim]` of `kv` with the prefixes at
/// `site` before them: the live prefixes in every row, or with per-example adapters each row's
/// own, after zeros up to [`RowPrefixes::width`].
pub fn prepend_prefixes<B: Backend>(site: &PrefixKv<B>, kv: AttentionKv<B>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let Some(rows) = site.example_adapters() else {
        return site.forward(kv);
    };
    let width = rows.iter().flatten().map(|p| p.len()).max().unwrap_or(0);
    let pad = |t: Tensor<B, 4>| {
        let [batch, heads, seq, head_dim] = t.dims();
        let missing = width + kv.keys.dims()[2] - seq;
        if missing == 0 { t } else { Tensor::cat(vec![Tensor::zeros([batch, heads, missing, head_dim], &t.device()), t], 2) }
    };
    let mut out = (pad(kv.keys.clone()), pad(kv.values.clone()));
    let mut done: Vec<*const crate::Prefix<B>> = Vec::new();
    for prefix in rows.iter().flatten() {
        if done.contains(&core::ptr::from_ref(*prefix)) {
            continue;
        }
        done.push(core::ptr::from_ref(*prefix));
        let mask: Vec<bool> = rows.iter().map(|r| r.is_some_and(|p| core::ptr::eq(p, *prefix))).collect();
        let (k, v) = prefix.post(&site.base, &kv, (kv.keys.clone(), kv.values.clone()));
        out = out.take_rows((pad(k), pad(v)), &mask);
    }
    out
}
