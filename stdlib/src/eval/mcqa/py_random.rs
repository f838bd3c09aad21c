//! Python's `random.Random(seed).sample`, bit for bit: the generator that
//! lm-evaluation-harness's default few-shot sampler (`ContextSampler.sample`
//! = `self.rnd.sample(self.docs, n)`, `rnd = random.Random(1234)` shared by
//! the task's documents in order) draws shots with.
//!
//! Mersenne Twister MT19937 seeded by `init_by_array` over the seed's 32-bit
//! words (CPython's `random_seed` for an int), `getrandbits(k)` as the top
//! `k` bits of one output word, `_randbelow(n)` by rejection on
//! `getrandbits(n.bit_length())`, and `sample`'s two algorithms (a pool for
//! small populations, a set of selected indices for large ones).

use std::collections::BTreeSet;

const N: usize = 624;
const M: usize = 397;

/// CPython's `random.Random` state, for integer seeds.
pub struct PyRandom {
    mt: [u32; N],
    index: usize,
}

impl PyRandom {
    /// `random.Random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> PyRandom {
        let mut key: Vec<u32> = Vec::new();
        let mut s = seed;
        while s > 0 {
            key.push(s as u32);
            s >>= 32;
        }
        if key.is_empty() {
            key.push(0);
        }
        let mut r = PyRandom {
            mt: [0; N],
            index: N,
        };
        r.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                r.mt[0] = r.mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = r.mt[i - 1] ^ (r.mt[i - 1] >> 30);
            r.mt[i] = (r.mt[i] ^ prev.wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                r.mt[0] = r.mt[N - 1];
                i = 1;
            }
        }
        r.mt[0] = 0x8000_0000;
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..N {
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(self.mt[i - 1] ^ (self.mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        self.index = N;
    }

    fn genrand_u32(&mut self) -> u32 {
        if self.index >= N {
            for k in 0..N {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % N] & 0x7fff_ffff);
                let mut v = self.mt[(k + M) % N] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.mt[k] = v;
            }
            self.index = 0;
        }
        let mut y = self.mt[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `getrandbits(k)` for 1 <= k <= 32.
    fn getrandbits(&mut self, k: u32) -> u32 {
        self.genrand_u32() >> (32 - k)
    }

    /// `_randbelow(n)` for 1 <= n < 2^32.
    fn randbelow(&mut self, n: usize) -> usize {
        let k = usize::BITS - n.leading_zeros();
        loop {
            let r = self.getrandbits(k) as usize;
            if r < n {
                return r;
            }
        }
    }

    /// The indices `random.sample(range(n), k)` returns, in order.
    /// `k <= n < 2^32`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n && n < (1usize << 32), "sample({n}, {k})");
        let mut setsize = 21usize;
        if k > 5 {
            // 4 ** ceil(log(3k, 4))
            let e = ((3 * k) as f64).ln() / 4f64.ln();
            setsize += 4usize.pow(e.ceil() as u32);
        }
        let mut out = Vec::with_capacity(k);
        if n <= setsize {
            let mut pool: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = self.randbelow(n - i);
                out.push(pool[j]);
                pool[j] = pool[n - i - 1];
            }
        } else {
            let mut selected = BTreeSet::new();
            for _ in 0..k {
                let mut j = self.randbelow(n);
                while selected.contains(&j) {
                    j = self.randbelow(n);
                }
                selected.insert(j);
                out.push(j);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values from CPython 3 (`python3 -c "import random; ..."`).
    #[test]
    fn matches_cpython_random_sample() {
        // r = random.Random(1234); [r.sample(range(50), 1)[0] for _ in range(10)]
        let mut r = PyRandom::new(1234);
        let got: Vec<usize> = (0..10).map(|_| r.sample(50, 1)[0]).collect();
        assert_eq!(got, [49, 28, 7, 0, 5, 37, 2, 42, 44, 5]);
        // r = random.Random(1234); [r.sample(range(7), 3) for _ in range(3)]  (the pool branch)
        let mut r = PyRandom::new(1234);
        let got: Vec<Vec<usize>> = (0..3).map(|_| r.sample(7, 3)).collect();
        assert_eq!(got, [vec![6, 3, 0], vec![0, 6, 4], vec![0, 5, 6]]);
        // r = random.Random(1234); r.sample(range(1000), 6), r.sample(range(10178), 2)  (the set branch)
        let mut r = PyRandom::new(1234);
        assert_eq!(r.sample(1000, 6), [989, 796, 451, 119, 7, 92]);
        assert_eq!(r.sample(10178, 2), [9539, 572]);
        // A seed of two 32-bit words: random.Random(2**40 + 5).sample(range(100), 2)
        let mut r = PyRandom::new((1 << 40) + 5);
        assert_eq!(r.sample(100, 2), [64, 66]);
    }
}
