//! The order of training batches: a function of the seed and the epoch alone, so that a resumed
//! run reads exactly the batches the uninterrupted run would have read.

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::{Encoded, rows};

/// How examples become batches.
#[derive(Clone, Debug)]
pub struct DataPlan<'a> {
    examples: &'a [Encoded],
    batch_size: usize,
    pack_to: Option<usize>,
    group_by_length: bool,
    seed: u64,
}

/// Where the batch stream stands: the next batch is batch `index` of epoch `epoch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch, from 0.
    pub epoch: usize,
    /// Batch within the epoch, from 0.
    pub index: usize,
}

/// Examples per length-sorted group, in batches (HF's `LengthGroupedSampler` uses 50).
const GROUP_BATCHES: usize = 50;

impl<'a> DataPlan<'a> {
    /// Batches of `batch_size` rows; rows packed to `pack_to` tokens when given; examples of
    /// similar length batched together when `group_by_length`.
    pub fn new(examples: &'a [Encoded], batch_size: usize, pack_to: Option<usize>, group_by_length: bool, seed: u64) -> Self {
        Self { examples, batch_size, pack_to, group_by_length, seed }
    }

    /// The batches of `epoch`, each a list of rows of example indices.
    pub fn epoch(&self, epoch: usize) -> Vec<Vec<Vec<usize>>> {
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        if self.group_by_length {
            for group in order.chunks_mut(self.batch_size * GROUP_BATCHES) {
                group.sort_by_key(|&i| std::cmp::Reverse(self.examples[i].ids.len()));
            }
        }
        rows(self.examples, &order, self.pack_to).chunks(self.batch_size).map(<[_]>::to_vec).collect()
    }

    /// Batches of every epoch up to `epochs`, summed.
    pub fn batches(&self, epochs: usize) -> usize {
        (0..epochs).map(|e| self.epoch(e).len()).sum()
    }
}

/// Reads batches in order across epochs.
#[derive(Debug)]
pub struct BatchStream<'a> {
    plan: DataPlan<'a>,
    /// The position of the next batch.
    pub cursor: Cursor,
    current: Vec<Vec<Vec<usize>>>,
}

impl<'a> BatchStream<'a> {
    /// A stream that starts at `cursor`.
    pub fn new(plan: DataPlan<'a>, cursor: Cursor) -> Self {
        let current = plan.epoch(cursor.epoch);
        Self { plan, cursor, current }
    }

    /// The next batch (rows of example indices).
    pub fn next_batch(&mut self) -> Vec<Vec<usize>> {
        if self.cursor.index >= self.current.len() {
            self.cursor = Cursor { epoch: self.cursor.epoch + 1, index: 0 };
            self.current = self.plan.epoch(self.cursor.epoch);
        }
        self.cursor.index += 1;
        self.current[self.cursor.index - 1].clone()
    }
}
