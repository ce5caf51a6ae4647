//! A synthetic sentiment task with a domain shift, generated from a seed (no download).
//!
//! Tokens `0..16` are positive and `16..32` negative in the general domain; the rest are neutral.
//! A sequence is labelled 1 when it holds more positive than negative tokens. In the shifted
//! domain, half of the sentiment words change polarity (`8..16` turn negative, `24..32`
//! positive), as words do between, say, film reviews and product reviews. A model trained on
//! the general domain is near chance there; fine-tuning adapts it.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Vocabulary size of the task.
pub const VOCAB: usize = 64;
/// Sequence length.
pub const SEQ_LEN: usize = 16;

/// Which word polarities apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// The pretraining domain.
    General,
    /// The fine-tuning domain, with half of the sentiment words flipped.
    Shifted,
}

/// `+1`, `-1` or `0` for token `t` in `domain`.
pub fn polarity(t: usize, domain: Domain) -> i32 {
    let general = match t {
        0..16 => 1,
        16..32 => -1,
        _ => 0,
    };
    let flipped = matches!(t, 8..16 | 24..32);
    if domain == Domain::Shifted && flipped { -general } else { general }
}

/// A small deterministic generator (64-bit LCG), so runs are reproducible everywhere.
#[derive(Clone, Debug)]
pub struct Lcg(u64);

impl Lcg {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407))
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// One labelled sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Token ids, `SEQ_LEN` of them.
    pub tokens: Vec<usize>,
    /// 1 positive, 0 negative.
    pub label: usize,
}

/// `n` examples of `domain`. Shifted-domain sequences draw half their sentiment words from the
/// flipped ones, so the shift matters.
pub fn dataset(domain: Domain, n: usize, seed: u64) -> Vec<Example> {
    let mut rng = Lcg::new(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let tokens: Vec<usize> = (0..SEQ_LEN)
            .map(|_| match (rng.below(3), domain) {
                (0, _) => 32 + rng.below(32),
                (1, Domain::Shifted) => [8, 24][rng.below(2)] + rng.below(8),
                _ => rng.below(32),
            })
            .collect();
        let score: i32 = tokens.iter().map(|&t| polarity(t, domain)).sum();
        if score != 0 {
            out.push(Example { tokens, label: usize::from(score > 0) });
        }
    }
    out
}

/// `(tokens [batch, SEQ_LEN], labels [batch])`.
pub fn batch<B: Backend>(examples: &[Example], device: &B::Device) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>) {
    let tokens: Vec<i64> = examples.iter().flat_map(|e| e.tokens.iter().map(|&t| t as i64)).collect();
    let labels: Vec<i64> = examples.iter().map(|e| e.label as i64).collect();
    (
        Tensor::from_data(TensorData::new(tokens, [examples.len(), SEQ_LEN]), device),
        Tensor::from_data(TensorData::new(labels, [examples.len()]), device),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_domain_polarity_and_are_balanced() {
        for domain in [Domain::General, Domain::Shifted] {
            let data = dataset(domain, 400, 7);
            let positive = data.iter().filter(|e| e.label == 1).count();
            assert!((150..250).contains(&positive), "{domain:?}: {positive} positive of 400");
        }
        assert_eq!(polarity(9, Domain::General), 1);
        assert_eq!(polarity(9, Domain::Shifted), -1);
        assert_eq!(polarity(40, Domain::Shifted), 0);
    }

    #[test]
    fn the_shift_changes_many_labels() {
        let shifted = dataset(Domain::Shifted, 400, 3);
        let disagree = shifted
            .iter()
            .filter(|e| {
                let general: i32 = e.tokens.iter().map(|&t| polarity(t, Domain::General)).sum();
                (general > 0) != (e.label == 1)
            })
            .count();
        assert!(disagree > 100, "only {disagree} of 400 labels change");
    }
}
