//! GELU, the exact (erf) form of torch's `nn.GELU()` and HF's `"gelu"`:
//! y = x · Φ(x) = x/2 · (1 + erf(x/√2)); dy/dx = Φ(x) + x·φ(x).
//! The forward's erf is a rational approximation in f32 (Eigen's, the kind
//! PyTorch's vectorised CPU kernel uses: x·P(x²)/Q(x²) on [−4, 4], ±1
//! outside), which the compiler vectorises; within 5e-7 of libm's f64 erf
//! (tested). The backward uses libm's f64 erf and exp.

use rayon::prelude::*;

const CHUNK: usize = 1 << 14;
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// 1/√(2π)
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// erf in f32: Eigen's `generic_fast_erf_float` rational approximation.
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[inline(always)]
fn gelu1(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline]
fn gelu_grad1(x: f32) -> f32 {
    let x = x as f64;
    let cdf = 0.5 * (1.0 + libm::erf(x * FRAC_1_SQRT_2));
    let pdf = INV_SQRT_2PI * (-0.5 * x * x).exp();
    (cdf + x * pdf) as f32
}

/// y = gelu(x) (set).
pub fn gelu_forward(x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len(), "gelu_forward: lengths");
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| {
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = gelu1(v);
            }
        });
}

/// dx = dy · gelu'(x) (set).
pub fn gelu_backward(dy: &[f32], x: &[f32], dx: &mut [f32]) {
    assert_eq!(x.len(), dy.len(), "gelu_backward: lengths");
    assert_eq!(x.len(), dx.len(), "gelu_backward: lengths");
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
        .for_each(|(dc, (xc, gc))| {
            for ((d, &v), &g) in dc.iter_mut().zip(xc).zip(gc) {
                *d = g * gelu_grad1(v);
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_matches_known_values() {
        // Φ(1) = 0.841344746..., Φ(-1) = 0.158655254..., Φ(2) = 0.977249868...
        let x = [0.0f32, 1.0, -1.0, 2.0, -8.0, 8.0];
        let mut y = [0.0f32; 6];
        gelu_forward(&x, &mut y);
        let want: [f64; 6] = [0.0, 0.841_344_746, -0.158_655_254, 1.954_499_736, 0.0, 8.0];
        for (a, b) in y.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn fast_erf_is_within_5e7_of_libm() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst < 5e-7, "{worst}");
    }

    #[test]
    fn backward_matches_finite_differences() {
        let x: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.1).collect();
        let dy: Vec<f32> = x.iter().map(|v| 0.5 + v.sin()).collect();
        let mut dx = vec![0.0; x.len()];
        gelu_backward(&dy, &x, &mut dx);
        let h = 1e-3f64;
        for i in 0..x.len() {
            let f = |v: f64| 0.5 * v * (1.0 + libm::erf(v * FRAC_1_SQRT_2));
            let g = (f(x[i] as f64 + h) - f(x[i] as f64 - h)) / (2.0 * h) * dy[i] as f64;
            assert!((g - dx[i] as f64).abs() < 1e-5, "x {} {g} {}", x[i], dx[i]);
        }
    }
}

#[cfg(test)]
mod bench {
    /// Nanoseconds per element of the forward; by hand:
    /// cargo test --release -p flow-kernels --lib gelu_speed -- --ignored --nocapture
    #[test]
    #[ignore = "timing, by hand"]
    fn gelu_speed() {
        let x: Vec<f32> = (0..4_000_000)
            .map(|i| (i % 1000) as f32 * 0.01 - 5.0)
            .collect();
        let mut y = vec![0.0f32; x.len()];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let t = std::time::Instant::now();
        pool.install(|| super::gelu_forward(&x, &mut y));
        println!(
            "gelu_forward: {:.1} ns/element (1 thread)",
            t.elapsed().as_nanos() as f64 / x.len() as f64
        );
    }
}
