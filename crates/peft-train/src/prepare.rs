//! From a data set to training examples: encoded, limited to `max_len` tokens, and split into
//! training and held-out examples.

use peft_core::Result;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::{Dataset, Encoded, Encoder};

/// Examples ready to train on, and what was done to fit them.
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The examples.
    pub examples: Vec<Encoded>,
    /// Examples cut to `max_len` tokens.
    pub truncated: usize,
    /// Examples left out: longer than `max_len` when dropping, or without a token to learn.
    pub dropped: usize,
}

impl Prepared {
    /// Encodes `data`; examples longer than `max_len` are cut (or, with `drop_long`, left out).
    pub fn new(data: &Dataset, encoder: &Encoder, max_len: usize, drop_long: bool) -> Result<Self> {
        let mut prepared = Self::default();
        for record in &data.records {
            let mut example = encoder.encode(record)?;
            if example.ids.len() > max_len {
                if drop_long {
                    prepared.dropped += 1;
                    continue;
                }
                example.ids.truncate(max_len);
                example.targets.truncate(max_len);
                prepared.truncated += 1;
            }
            if example.target_count() == 0 {
                prepared.dropped += 1;
                continue;
            }
            prepared.examples.push(example);
        }
        Ok(prepared)
    }

    /// Holds out a seeded `share` of the examples (at least one when `share > 0`): returns them,
    /// keeping the rest.
    pub fn split_off(&mut self, share: f64, seed: u64) -> Vec<Encoded> {
        if share <= 0.0 || self.examples.len() < 2 {
            return Vec::new();
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        for i in (1..self.examples.len()).rev() {
            self.examples.swap(i, rng.random_range(0..=i));
        }
        let held = ((self.examples.len() as f64 * share).round() as usize).clamp(1, self.examples.len() - 1);
        self.examples.split_off(self.examples.len() - held)
    }
}
