//! The generator's randomness: a small seeded generator of our own
//! (xoshiro256**, seeded by splitmix64), so a `--seed` gives the same school
//! whatever version of the `rand` crate is built, and a Zipf-like sampler.

/// xoshiro256** (Blackman and Vigna): fast, and good enough for traffic.
#[derive(Debug, Clone)]
pub struct Rng {
    state: [u64; 4],
}

/// splitmix64: spreads a seed (or a seed and a few numbers) over 64 bits.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Rng {
    /// A generator for `seed` and a stream number: each hour and device gets
    /// its own stream, so changing one part of the school leaves the others.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut x = mix(seed ^ mix(stream));
        let mut state = [0; 4];
        for word in &mut state {
            x = mix(x);
            *word = x;
        }
        Rng { state }
    }

    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Exponential with mean `mean`.
    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }

    /// Shuffles `items` (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// Ranks `0..n` drawn with probability proportional to `1 / (rank + 1)^s`:
/// the skew of web traffic, where a few names take most lookups.
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n.max(1))
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn len(&self) -> usize {
        self.cumulative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cumulative.is_empty()
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let target = rng.unit() * self.cumulative[self.cumulative.len() - 1];
        self.cumulative.partition_point(|&c| c <= target).min(self.cumulative.len() - 1)
    }
}

/// Picks indexes in proportion to weights (cumulative table, binary search).
#[derive(Debug, Clone, Default)]
pub struct Weighted {
    cumulative: Vec<f64>,
}

impl Weighted {
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Weighted {
        let mut total = 0.0;
        let cumulative = weights
            .into_iter()
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        Weighted { cumulative }
    }

    pub fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// None when every weight is zero.
    pub fn sample(&self, rng: &mut Rng) -> Option<usize> {
        let total = self.total();
        if total <= 0.0 {
            return None;
        }
        let target = rng.unit() * total;
        Some(self.cumulative.partition_point(|&c| c <= target).min(self.cumulative.len() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_numbers_and_streams_differ() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut r = Rng::new(7, 1);
                move |_| r.next_u64()
            })
            .collect();
        let mut other = Rng::new(7, 2);
        assert_eq!(a, b);
        assert_ne!(a[0], other.next_u64());
    }

    #[test]
    fn zipf_is_skewed_towards_the_first_ranks() {
        let zipf = Zipf::new(100_000, 1.0);
        let mut rng = Rng::new(1, 0);
        let draws = 200_000;
        let mut top_hundred = 0;
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..draws {
            let rank = zipf.sample(&mut rng);
            assert!(rank < 100_000);
            top_hundred += usize::from(rank < 100);
            distinct.insert(rank);
        }
        // 1/r over 100,000 ranks: the first 100 (0.1%) take about 43%.
        let share = top_hundred as f64 / draws as f64;
        assert!((0.38..0.48).contains(&share), "top 100 share {share}");
        // ...and the long tail is still reached.
        assert!(distinct.len() > 30_000, "{} distinct ranks", distinct.len());
    }

    #[test]
    fn weighted_follows_its_weights_and_skips_zeros() {
        let weighted = Weighted::new([1.0, 0.0, 3.0]);
        let mut rng = Rng::new(3, 0);
        let mut counts = [0; 3];
        for _ in 0..40_000 {
            counts[weighted.sample(&mut rng).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        let ratio = f64::from(counts[2]) / f64::from(counts[0]);
        assert!((2.7..3.3).contains(&ratio), "{counts:?}");
        assert_eq!(Weighted::new([0.0]).sample(&mut rng), None);
    }
}
