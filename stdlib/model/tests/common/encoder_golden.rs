//! The encoder goldens of tests/golden/encoder (made by
//! scripts/make_encoder_golden.py) as the tests read them.

use std::path::{Path, PathBuf};

use flow_model::encoder::{Batch, Encoder};
use serde_json::Value;

pub fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/encoder")
        .join(name)
}

pub fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_dir(name).join("golden.json")).unwrap())
        .unwrap()
}

pub fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// The golden's right-padded batch, as transformers saw it.
pub fn padded_batch(enc: &Encoder, g: &Value) -> Batch {
    Batch::from_padded(
        &enc.config,
        &rows(&g["input_ids"]),
        &rows(&g["attention_mask"]),
    )
    .unwrap()
}

pub fn labels(g: &Value) -> Vec<u32> {
    g["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
