//! Generating tokens with the reference decoders: greedy, or sampled with a temperature and top-p,
//! one token at a time with a key/value cache (or, to check it, without).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use peft_core::{PeftError, Result};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::batch::{KvCache, TokenBatch};

/// A decoder that predicts the next token.
pub trait CausalLm<B: Backend> {
    /// Logits `[batch, seq, vocab]` of `batch`; with a cache, `batch` continues the cached tokens
    /// and is added to them.
    fn logits(&self, batch: &TokenBatch<B>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3>;
    /// An empty cache for this model.
    fn new_cache(&self) -> KvCache<B>;
    /// The longest sequence the model takes (its position table), if it has a limit.
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// The final hidden states of `batch` and the output head, when the logits are exactly
    /// `hidden · weight` (no bias, no live adapter, not quantized): what a loss needs to compute
    /// the logits a few rows at a time. `None` when the head is anything else;
    /// [`logits`](Self::logits) always works.
    fn hidden_and_head(&self, _batch: &TokenBatch<B>) -> Option<HeadInput<B>> {
        None
    }
}

/// The input of a causal LM's output head: `logits = hidden · weight`.
#[derive(Clone, Debug)]
pub struct HeadInput<B: Backend> {
    /// Final hidden states `[batch, seq, hidden]`.
    pub hidden: Tensor<B, 3>,
    /// The head's weight `[hidden, vocab]` (a tied head: the token embeddings, transposed).
    pub weight: Tensor<B, 2>,
    /// Whether the weight is a parameter that trains (it needs a gradient).
    pub weight_trains: bool,
}

impl<B: Backend> HeadInput<B> {
    /// The head input for `weight` as its parameter holds it: a `Linear`'s `[hidden, vocab]`, or
    /// with `tied` the token embeddings' `[vocab, hidden]`; whether it trains is read from it.
    pub fn new(hidden: Tensor<B, 3>, weight: Tensor<B, 2>, tied: bool) -> Self {
        let weight_trains = weight.is_require_grad();
        let weight = if tied { weight.transpose() } else { weight };
        Self { hidden, weight, weight_trains }
    }
}

/// How [`generate`] picks tokens. The default is greedy, 64 new tokens, with the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens to generate (fewer when the sequence reaches the model's position limit).
    pub max_new_tokens: usize,
    /// 0 picks the most likely token (greedy); above 0, sampling from `softmax(logits / t)`.
    pub temperature: f64,
    /// Sampling keeps the smallest set of most likely tokens whose probability reaches `top_p`.
    pub top_p: f64,
    /// Seed of the sampling.
    pub seed: u64,
    /// Tokens that end the generation (included in the output, as transformers does).
    pub stop: Vec<u32>,
    /// Reuse keys and values of earlier tokens; without, every step recomputes the whole sequence.
    pub use_cache: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self { max_new_tokens: 64, temperature: 0.0, top_p: 1.0, seed: 0, stop: Vec::new(), use_cache: true }
    }
}

impl GenerationConfig {
    fn check(&self) -> Result<()> {
        let valid = self.temperature >= 0.0 && self.temperature.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0;
        if !valid {
            return Err(PeftError::InvalidConfig(format!("temperature must be at least 0 and top_p in (0, 1], got {} and {}", self.temperature, self.top_p)));
        }
        Ok(())
    }
}

/// The next token after `logits [vocab]`.
fn pick(logits: &[f32], config: &GenerationConfig, rng: &mut Xoshiro256PlusPlus) -> u32 {
    let argmax = || logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best }).0 as u32;
    if config.temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(u32, f64)> = logits.iter().enumerate().map(|(i, &v)| (i as u32, ((v as f64 - max) / config.temperature).exp())).collect();
    let sum: f64 = probs.iter().map(|(_, p)| p).sum();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut kept = 0.0;
    let nucleus: Vec<(u32, f64)> = probs
        .into_iter()
        .take_while(|(_, p)| {
            let before = kept;
            kept += p / sum;
            before < config.top_p
        })
        .collect();
    let mut target = rng.random::<f64>() * nucleus.iter().map(|(_, p)| p).sum::<f64>();
    for &(token, p) in &nucleus {
        target -= p;
        if target <= 0.0 {
            return token;
        }
    }
    nucleus.last().map_or_else(argmax, |(t, _)| *t)
}

/// The tokens `model` generates after `prompt`, stopping after `config.max_new_tokens` or at a
/// stop token (which is included).
pub fn generate<B: Backend>(model: &dyn CausalLm<B>, prompt: &[u32], config: &GenerationConfig, device: &B::Device) -> Result<Vec<u32>> {
    config.check()?;
    if prompt.is_empty() {
        return Err(PeftError::InvalidConfig("the prompt has no tokens".into()));
    }
    let limit = model.max_positions().unwrap_or(usize::MAX);
    if prompt.len() > limit {
        return Err(PeftError::InvalidConfig(format!("the prompt's {} tokens exceed the model's {limit} positions", prompt.len())));
    }
    let row = |ids: &[u32]| Tensor::<B, 2, Int>::from_data(TensorData::new(ids.iter().map(|&t| i64::from(t)).collect::<Vec<_>>(), [1, ids.len()]), device);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
    let mut cache = model.new_cache();
    let mut sequence = prompt.to_vec();
    let mut fed = 0;
    let mut out = Vec::new();
    while out.len() < config.max_new_tokens && sequence.len() < limit {
        let logits = if config.use_cache {
            let batch = TokenBatch::single(row(&sequence[fed..]), fed);
            fed = sequence.len();
            model.logits(&batch, Some(&mut cache))
        } else {
            model.logits(&TokenBatch::single(row(&sequence), 0), None)
        };
        let [_, seq, vocab] = logits.dims();
        let last = logits.narrow(1, seq - 1, 1).reshape([vocab]).into_data().convert::<f32>().into_vec::<f32>().unwrap_or_default();
        let token = pick(&last, config, &mut rng);
        out.push(token);
        sequence.push(token);
        if config.stop.contains(&token) {
            break;
        }
    }
    Ok(out)
}
