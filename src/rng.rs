//! Deterministic random numbers: xoshiro256** seeded through blake3, with named
//! sub-streams so that each use (initialisation, shuffling, dropout, replay) has its
//! own stream and adding a draw in one never shifts another.

/// A small, fast, reproducible generator (xoshiro256**).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A stream determined by a seed and a path of labels (`["init", "image.0"]`).
    pub fn derive(seed: u64, labels: &[&str]) -> Rng {
        let mut h = blake3::Hasher::new();
        h.update(b"lethe-rng-v1");
        h.update(&seed.to_le_bytes());
        for l in labels {
            h.update(&(l.len() as u64).to_le_bytes());
            h.update(l.as_bytes());
        }
        let bytes = h.finalize();
        let b = bytes.as_bytes();
        let mut s = [0u64; 4];
        for (i, word) in s.iter_mut().enumerate() {
            *word = u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        if s == [0; 4] {
            s[0] = 1; // the all-zero state is the one xoshiro cannot leave
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) as f32 (24 bits).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in `0..n` (n > 0), without modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        let n = n as u64;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return (x % n) as usize;
            }
        }
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(f64::MIN_POSITIVE);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, &["x"]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::derive(7, &["x"]).next_u64(),
            Rng::derive(7, &["y"]).next_u64()
        );
        assert_ne!(
            Rng::derive(7, &["x"]).next_u64(),
            Rng::derive(8, &["x"]).next_u64()
        );
        // Label boundaries matter: ["ab"] is not ["a", "b"].
        assert_ne!(
            Rng::derive(1, &["ab"]).next_u64(),
            Rng::derive(1, &["a", "b"]).next_u64()
        );
    }

    #[test]
    fn uniform_and_below_stay_in_range() {
        let mut r = Rng::derive(1, &[]);
        let mut counts = [0usize; 5];
        for _ in 0..10_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x));
            counts[r.below(5)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (1800..2200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        Rng::derive(3, &["s"]).shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
    }
}
