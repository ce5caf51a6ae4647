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
    let filled: Vec<usize> = site.example_adapters()?.iter().map(|r| r.map_or(0, |i| site.adapters[i].len())).collect();
    let width = filled.iter().copied().max().unwrap_or(0);
    (width > 0).then_some(RowPrefixes { width, filled })
}

/// The keys and values `[batch, kv_heads, prefix + seq, head_dim]` of `kv` with the prefixes at
/// `site` before them: the live prefixes in every row, or with per-example adapters each row's
/// own, after zeros up to [`RowPrefixes::width`]. Rows are taken on the prefix positions only;
/// the tokens' keys and values join them once.
pub fn prepend_prefixes<B: Backend>(site: &PrefixKv<B>, kv: AttentionKv<B>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (Some(layout), Some(rows)) = (row_prefixes(site), site.example_adapters()) else {
        return site.forward(kv);
    };
    let [batch, heads, _, head_dim] = kv.keys.dims();
    let device = kv.keys.device();
    // A prefix's own positions (the first `n` of what it returns), after zeros up to the width.
    let own = |t: Tensor<B, 4>, n: usize| {
        let t = t.narrow(2, 0, n);
        if n == layout.width { t } else { Tensor::cat(vec![Tensor::zeros([batch, heads, layout.width - n, head_dim], &device), t], 2) }
    };
    let empty = || Tensor::zeros([batch, heads, layout.width, head_dim], &device);
    let mut block = (empty(), empty());
    let mut used: Vec<usize> = rows.iter().flatten().copied().collect();
    used.sort_unstable();
    used.dedup();
    for i in used {
        let prefix = &site.adapters[i];
        let (k, v) = prefix.post(&site.base, &kv, (kv.keys.clone(), kv.values.clone()));
        let mask: Vec<bool> = rows.iter().map(|r| *r == Some(i)).collect();
        block = block.take_rows((own(k, prefix.len()), own(v, prefix.len())), &mask);
    }
    (Tensor::cat(vec![block.0, kv.keys], 2), Tensor::cat(vec![block.1, kv.values], 2))
}
