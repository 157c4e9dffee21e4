//! Which pairs each training step sees.
//!
//! A training pair is a caption and its image; an epoch visits every training
//! caption of the stage's task(s) exactly once, in an order drawn from the
//! `("batches", stage, epoch)` stream. So an image with five captions is seen five
//! times an epoch, each time with another caption, as in VSE++ and CLIP training.
//!
//! - `within_task`: each batch holds captions of one task. For a joint schedule the
//!   batches of all tasks are interleaved in a random order (the seed's "CTNP no").
//! - `cross_task`: the captions of all tasks are shuffled together (joint only).
//!
//! A final batch of a single pair (no negatives) is dropped.

use crate::lang::{Negatives, Sampler};
use crate::rng::Rng;

/// The batches of one epoch, as caption rows.
pub fn epoch_batches(
    tasks: &[&[u32]],
    batch: usize,
    negatives: Negatives,
    seed: u64,
    stage: usize,
    epoch: usize,
) -> Vec<Vec<u32>> {
    let stream = |labels: &[&str]| {
        let mut all = vec!["batches", "stage"];
        all.extend_from_slice(labels);
        Rng::derive(seed, &all)
    };
    let (stage_s, epoch_s) = (stage.to_string(), epoch.to_string());
    let chunk = |items: Vec<u32>| -> Vec<Vec<u32>> {
        items
            .chunks(batch)
            .filter(|c| c.len() >= 2)
            .map(<[u32]>::to_vec)
            .collect()
    };
    match negatives {
        Negatives::CrossTask => {
            let mut all: Vec<u32> = tasks.iter().flat_map(|t| t.iter().copied()).collect();
            stream(&[&stage_s, "epoch", &epoch_s, "cross"]).shuffle(&mut all);
            chunk(all)
        }
        Negatives::WithinTask => {
            let mut batches = Vec::new();
            for (i, task) in tasks.iter().enumerate() {
                let mut items = task.to_vec();
                stream(&[&stage_s, "epoch", &epoch_s, "task", &i.to_string()]).shuffle(&mut items);
                batches.extend(chunk(items));
            }
            if tasks.len() > 1 {
                stream(&[&stage_s, "epoch", &epoch_s, "interleave"]).shuffle(&mut batches);
            }
            batches
        }
    }
}

/// What one training step sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Caption rows: pair b is caption `captions[b]` and its image. Replayed
    /// pairs come last.
    pub captions: Vec<u32>,
    /// Extra negative texts (`pseudo_text`): (batch row, pseudo text row), the
    /// text negating the image of that row; grouped by row, rows ascending.
    pub negatives: Vec<(u32, u32)>,
}

impl Batch {
    /// The rows with extra negatives and, for each, its range in `negatives`.
    pub fn negatives_by_row(&self) -> impl Iterator<Item = (usize, std::ops::Range<usize>)> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            let &(row, _) = self.negatives.get(start)?;
            let len = self.negatives[start..]
                .iter()
                .take_while(|(r, _)| *r == row)
                .count();
            let range = start..start + len;
            start += len;
            Some((row as usize, range))
        })
    }
}

/// `n` distinct items of `from` (all of them when it has fewer), in draw order.
pub fn draw_distinct(from: &[u32], n: usize, rng: &mut Rng) -> Vec<u32> {
    let mut pool = from.to_vec();
    let n = n.min(pool.len());
    for i in 0..n {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    pool.truncate(n);
    pool
}

/// The replay memory: train pairs (caption rows) kept from past tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayMemory {
    capacity: usize,
    sampler: Sampler,
    items: Vec<u32>,
    /// Reservoir: how many pairs the stream has offered so far.
    seen: u64,
    /// Balanced: each past task's candidates, in a fixed random order.
    per_task: Vec<Vec<u32>>,
}

impl ReplayMemory {
    pub fn new(capacity: usize, sampler: Sampler) -> Self {
        ReplayMemory {
            capacity,
            sampler,
            items: Vec::new(),
            seen: 0,
            per_task: Vec::new(),
        }
    }

    /// The memory after tasks `past` (in learning order), rebuilt deterministically
    /// from the data so that no node has to hand it to the next.
    pub fn after_tasks(
        capacity: usize,
        sampler: Sampler,
        past: &[(&str, &[u32])],
        seed: u64,
    ) -> Self {
        let mut memory = ReplayMemory::new(capacity, sampler);
        for (task, captions) in past {
            memory.add_task(task, captions, seed);
        }
        memory
    }

    fn add_task(&mut self, task: &str, captions: &[u32], seed: u64) {
        let mut rng = Rng::derive(seed, &["replay", "fill", task]);
        match self.sampler {
            Sampler::Reservoir => {
                for &c in captions {
                    self.seen += 1;
                    if self.items.len() < self.capacity {
                        self.items.push(c);
                    } else {
                        let j = rng.below(self.seen as usize);
                        if j < self.capacity {
                            self.items[j] = c;
                        }
                    }
                }
            }
            Sampler::Balanced => {
                let mut candidates = captions.to_vec();
                rng.shuffle(&mut candidates);
                candidates.truncate(self.capacity);
                self.per_task.push(candidates);
                let n = self.per_task.len();
                self.items.clear();
                for (i, c) in self.per_task.iter().enumerate() {
                    let quota = self.capacity / n + usize::from(i < self.capacity % n);
                    self.items.extend(c.iter().take(quota));
                }
            }
        }
    }

    pub fn items(&self) -> &[u32] {
        &self.items
    }

    /// `r` distinct memory items for one batch.
    pub fn sample(&self, r: usize, rng: &mut Rng) -> Vec<u32> {
        let r = r.min(self.items.len());
        let mut picked: Vec<usize> = Vec::with_capacity(r);
        // Partial Fisher-Yates over indices, without copying the memory.
        let mut swaps: std::collections::HashMap<usize, usize> = std::collections::HashMap::new();
        let n = self.items.len();
        for i in 0..r {
            let j = i + rng.below(n - i);
            let vj = *swaps.get(&j).unwrap_or(&j);
            let vi = *swaps.get(&i).unwrap_or(&i);
            swaps.insert(j, vi);
            picked.push(vj);
        }
        picked.into_iter().map(|i| self.items[i]).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_visits_every_caption_once() {
        let a: Vec<u32> = (0..10).collect();
        let b: Vec<u32> = (10..25).collect();
        for neg in [Negatives::WithinTask, Negatives::CrossTask] {
            let batches = epoch_batches(&[&a, &b], 4, neg, 1, 1, 0);
            let mut seen: Vec<u32> = batches.iter().flatten().copied().collect();
            seen.sort();
            // 10 = 4+4+2 and 15 = 4+4+4+3 within tasks; 25 = 6x4 + a dropped single across.
            let expected = if neg == Negatives::WithinTask { 25 } else { 24 };
            assert_eq!(seen.len(), expected);
            seen.dedup();
            assert_eq!(seen.len(), expected);
        }
        let within = epoch_batches(&[&a, &b], 4, Negatives::WithinTask, 1, 1, 0);
        assert!(within
            .iter()
            .all(|batch| batch.iter().all(|&c| c < 10) || batch.iter().all(|&c| c >= 10)));
    }

    #[test]
    fn epochs_and_seeds_change_the_order() {
        let a: Vec<u32> = (0..50).collect();
        let e0 = epoch_batches(&[&a], 8, Negatives::WithinTask, 1, 1, 0);
        assert_eq!(e0, epoch_batches(&[&a], 8, Negatives::WithinTask, 1, 1, 0));
        assert_ne!(e0, epoch_batches(&[&a], 8, Negatives::WithinTask, 1, 1, 1));
        assert_ne!(e0, epoch_batches(&[&a], 8, Negatives::WithinTask, 2, 1, 0));
    }

    #[test]
    fn memories_respect_capacity_and_balance() {
        let t1: Vec<u32> = (0..100).collect();
        let t2: Vec<u32> = (100..130).collect();
        let r = ReplayMemory::after_tasks(40, Sampler::Reservoir, &[("a", &t1), ("b", &t2)], 3);
        assert_eq!(r.items().len(), 40);
        let b = ReplayMemory::after_tasks(40, Sampler::Balanced, &[("a", &t1), ("b", &t2)], 3);
        assert_eq!(b.items().iter().filter(|&&c| c < 100).count(), 20);
        assert_eq!(b.items().iter().filter(|&&c| c >= 100).count(), 20);
        let mut rng = Rng::derive(1, &["x"]);
        let s = b.sample(10, &mut rng);
        let mut d = s.clone();
        d.sort();
        d.dedup();
        assert_eq!(d.len(), 10);
    }
}
