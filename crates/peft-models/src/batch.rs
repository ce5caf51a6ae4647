//! What the reference decoders take beyond token ids: positions and segments, so that one
//! mechanism gives padded batches (segment 0 is padding), packed batches (several examples in a
//! row, attention kept inside each) and incremental decoding with a key/value cache.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Where padding goes in a [`TokenBatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// After the tokens (training).
    Right,
    /// Before the tokens (batched generation, so that every row ends at its last token).
    Left,
}

/// Token sequences for a decoder: ids, each token's position in its sequence, and its segment.
/// A token attends to the tokens of its own segment at or before it (and to every prefix
/// position); segment 0 is padding, attended to by nothing.
#[derive(Clone, Debug)]
pub struct TokenBatch<B: Backend> {
    /// Token ids `[batch, seq]`.
    pub tokens: Tensor<B, 2, Int>,
    /// Positions `[batch, seq]`, from 0 in each sequence (a prefix adapter's positions come first).
    pub positions: Tensor<B, 2, Int>,
    /// Segments `[batch, seq]`: 1, 2, ... for the sequences of a row, 0 for padding.
    pub segments: Tensor<B, 2, Int>,
}

impl<B: Backend> TokenBatch<B> {
    /// One unpadded sequence per row, starting at position `start`.
    pub fn single(tokens: Tensor<B, 2, Int>, start: usize) -> Self {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(start as i64..(start + seq) as i64, &device).unsqueeze::<2>().expand([batch, seq]);
        Self { positions, segments: Tensor::ones([batch, seq], &device), tokens }
    }

    /// Rows of one or more sequences each (several: packed, each its own segment), padded with
    /// `pad_id` on `side` to the longest row.
    pub fn new(rows: &[Vec<&[u32]>], pad_id: u32, side: Padding, device: &B::Device) -> Self {
        let len = rows.iter().map(|r| r.iter().map(|s| s.len()).sum::<usize>()).max().unwrap_or(0);
        let (mut tokens, mut positions, mut segments) = (Vec::new(), Vec::new(), Vec::new());
        for row in rows {
            let used: usize = row.iter().map(|s| s.len()).sum();
            let pad = |t: &mut Vec<i64>, p: &mut Vec<i64>, g: &mut Vec<i64>| {
                t.extend(std::iter::repeat_n(i64::from(pad_id), len - used));
                p.extend(std::iter::repeat_n(0, len - used));
                g.extend(std::iter::repeat_n(0, len - used));
            };
            if side == Padding::Left {
                pad(&mut tokens, &mut positions, &mut segments);
            }
            for (s, seq) in row.iter().enumerate() {
                tokens.extend(seq.iter().map(|&t| i64::from(t)));
                positions.extend(0..seq.len() as i64);
                segments.extend(std::iter::repeat_n(s as i64 + 1, seq.len()));
            }
            if side == Padding::Right {
                pad(&mut tokens, &mut positions, &mut segments);
            }
        }
        let shape = [rows.len(), len];
        let tensor = |v: Vec<i64>| Tensor::from_data(TensorData::new(v, shape), device);
        Self { tokens: tensor(tokens), positions: tensor(positions), segments: tensor(segments) }
    }

    /// `[batch, seq]`.
    pub fn dims(&self) -> [usize; 2] {
        self.tokens.dims()
    }
}

/// Keys and values of the tokens seen so far, per attention layer (prefix included), and their
/// segments: what incremental decoding reuses instead of recomputing.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    segments: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `layers` attention layers.
    pub fn new(layers: usize) -> Self {
        Self { layers: vec![None; layers], segments: None }
    }

    /// Tokens cached so far (prefix not counted).
    pub fn len(&self) -> usize {
        self.segments.as_ref().map_or(0, |s| s.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The segments of every key once `new` joins the cached tokens, `[batch, cached + new]`,
    /// recorded for the next call.
    pub(crate) fn extend_segments(&mut self, new: &Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
        let all = match self.segments.take() {
            Some(old) => Tensor::cat(vec![old, new.clone()], 1),
            None => new.clone(),
        };
        self.segments = Some(all.clone());
        all
    }

    /// Layer `layer`'s keys and values with `(k, v)` appended; `first` makes the first entry
    /// (where a prefix adapter adds its own).
    pub(crate) fn append(&mut self, layer: usize, k: Tensor<B, 4>, v: Tensor<B, 4>, first: impl FnOnce((Tensor<B, 4>, Tensor<B, 4>)) -> (Tensor<B, 4>, Tensor<B, 4>)) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let kv = match self.layers[layer].take() {
            Some((ck, cv)) => (Tensor::cat(vec![ck, k], 2), Tensor::cat(vec![cv, v], 2)),
            None => first((k, v)),
        };
        self.layers[layer] = Some(kv.clone());
        kv
    }
}

/// The additive attention bias `[batch, 1, queries, prefix + keys]` for queries with segments
/// `queries [batch, q]`, the last `q` of the keys with segments `keys [batch, k]`: 0 where a query
/// sees a key (the prefix, and its own segment: up to itself when `causal`), a large negative
/// number elsewhere (finite, so that a padding row stays finite).
pub fn attention_bias<B: Backend>(queries: &Tensor<B, 2, Int>, keys: &Tensor<B, 2, Int>, prefix: usize, causal: bool) -> Tensor<B, 4> {
    let [batch, q] = queries.dims();
    let [_, k] = keys.dims();
    let device = queries.device();
    let past = k - q;
    let same = queries.clone().unsqueeze_dim::<3>(2).expand([batch, q, k]).equal(keys.clone().unsqueeze_dim::<3>(1).expand([batch, q, k]));
    let key_index = Tensor::<B, 1, Int>::arange(0..k as i64, &device).unsqueeze_dim::<2>(0).expand([q, k]);
    let query_index = Tensor::<B, 1, Int>::arange(past as i64..k as i64, &device).unsqueeze_dim::<2>(1).expand([q, k]);
    let real = queries.clone().not_equal_elem(0).unsqueeze_dim::<3>(2).expand([batch, q, k]);
    let visible = same.bool_and(real);
    let visible = if causal { visible.bool_and(key_index.lower_equal(query_index).unsqueeze_dim::<3>(0).expand([batch, q, k])) } else { visible };
    let bias = Tensor::<B, 3>::zeros([batch, q, k], &device).mask_fill(visible.bool_not(), -1e9);
    let bias = if prefix == 0 { bias } else { Tensor::cat(vec![Tensor::zeros([batch, q, prefix], &device), bias], 2) };
    bias.unsqueeze_dim(1)
}
