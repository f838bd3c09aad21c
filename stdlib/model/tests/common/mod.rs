//! Shared helpers: the HF transformers goldens of tests/golden (made by make_golden.py).
#![allow(dead_code)]

pub mod counting;
pub mod encoder_golden;

use std::collections::HashMap;
use std::path::PathBuf;

use safetensors::SafeTensors;

pub const ARCHS: [&str; 4] = ["qwen2", "qwen3", "llama", "mistral"];

pub fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

pub fn golden_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(golden_dir(name).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn golden_tensors(name: &str) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(golden_dir(name).join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                v.data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            )
        })
        .collect()
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Largest |a - b| relative to the largest |b| (floored at 1e-3 so all-tiny tensors compare absolutely).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let scale = b
        .iter()
        .fold(0.0f64, |m, x| m.max(x.abs() as f64))
        .max(1e-3);
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()));
    diff / scale
}

/// The entry of largest gradient magnitude among 8 drawn at random: a
/// finite-difference check there stands well above the rounding noise.
pub fn large_gradient_entry(grad: &[f32], rng: &mut impl rand::Rng) -> usize {
    (0..8)
        .map(|_| rng.random_range(0..grad.len()))
        .max_by(|a, b| grad[*a].abs().total_cmp(&grad[*b].abs()))
        .unwrap()
}
