//! Mini-batches of request indices: seeded shuffles, one epoch after another.

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

#[derive(Clone, Debug)]
pub struct BatchSampler {
    order: Vec<usize>,
    cursor: usize,
    batch_size: usize,
    rng: Xoshiro256PlusPlus,
}

impl BatchSampler {
    pub fn new(len: usize, batch_size: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(&mut rng);
        Self {
            order,
            cursor: 0,
            batch_size: batch_size.max(1),
            rng,
        }
    }

    /// The next `batch_size` indices (a new shuffle starts when an epoch runs out).
    pub fn next_batch(&mut self) -> Vec<usize> {
        let mut batch = Vec::with_capacity(self.batch_size.min(self.order.len()));
        while batch.len() < self.batch_size.min(self.order.len()) {
            if self.cursor == self.order.len() {
                self.order.shuffle(&mut self.rng);
                self.cursor = 0;
            }
            batch.push(self.order[self.cursor]);
            self.cursor += 1;
        }
        batch
    }

    /// Steps in one pass over the data.
    pub fn steps_per_epoch(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}
