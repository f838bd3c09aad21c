//! The BERT / RoBERTa / XLM-RoBERTa encoder family: Hugging Face
//! directories in, a `*ForSequenceClassification` directory out.
//!
//! One concern a file: `config` (config.json), `params` (tensor names of
//! HF's classifier classes, loading, saving), `tokenize` (tokenizer.json,
//! truncation), `attention` (bidirectional, ragged batches), `forward`
//! (embeddings with RoBERTa's position offset, post-LayerNorm blocks, exact
//! GELU, the head on the first token), `dropout` (training mode's masks),
//! `backward` (every tensor's gradient), `train` (AdamW fine-tuning). The logits and gradients are checked against
//! transformers in `tests/encoder.rs`.

pub mod attention;
pub mod backward;
pub mod config;
pub mod dropout;
pub mod forward;
pub mod params;
pub mod tokenize;
pub mod train;

use std::path::Path;

pub use config::{EncoderConfig, Family};
pub use dropout::Dropout;
pub use forward::Batch;
pub use params::{EncoderParams, LoadReport};
pub use tokenize::EncoderTokenizer;
pub use train::{FineTuneConfig, FineTuner, StepInfo};

use crate::error::{write_atomic, ModelError};

/// An encoder with a 2-way classification head.
#[derive(Clone, Debug)]
pub struct Encoder {
    pub config: EncoderConfig,
    pub params: EncoderParams,
}

impl Encoder {
    /// Loads `dir`; a missing classification head is initialised from `seed`
    /// (listed in the report, as transformers warns).
    pub fn load(dir: &Path, seed: u64) -> Result<(Encoder, LoadReport), ModelError> {
        let config = EncoderConfig::load(dir)?;
        let is_classifier = config
            .raw
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter().any(|s| {
                    s.as_str()
                        .is_some_and(|s| s.ends_with("ForSequenceClassification"))
                })
            });
        if is_classifier && config.labels.len() > 2 {
            return Err(ModelError::invalid(
                &dir.join("config.json"),
                format!(
                    "a classifier of {} labels: flow's encoder classifier has 2",
                    config.labels.len()
                ),
            ));
        }
        let (params, report) = params::load_params(dir, &config, seed)?;
        Ok((Encoder { config, params }, report))
    }

    /// Logits (B×2) of a batch.
    pub fn logits(&self, batch: &Batch) -> Vec<f32> {
        forward::forward(&self.config, &self.params, batch, false, None).0
    }

    /// P(label 1) of each sequence: softmax of the two logits.
    pub fn probabilities(&self, seqs: &[Vec<u32>]) -> Result<Vec<f32>, ModelError> {
        let batch = Batch::new(&self.config, seqs)?;
        Ok(self
            .logits(&batch)
            .chunks_exact(2)
            .map(|z| 1.0 / (1.0 + (z[0] - z[1]).exp()))
            .collect())
    }

    /// Writes an HF `*ForSequenceClassification` directory: config.json
    /// (architectures, id2label/label2id with `labels[1]` the positive
    /// class), model.safetensors (f32, HF names) and the tokenizer files of
    /// `tokenizer_dir`.
    pub fn save_classifier(
        &self,
        dir: &Path,
        labels: [&str; 2],
        tokenizer_dir: &Path,
    ) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        let cfg = params::classifier_config(&self.config, labels);
        write_atomic(
            &dir.join("config.json"),
            serde_json::to_string_pretty(&cfg).expect("json").as_bytes(),
        )?;
        params::save_safetensors(&dir.join("model.safetensors"), &self.params)?;
        crate::tokenizer::copy_tokenizer_files(tokenizer_dir, dir)?;
        for extra in ["sentencepiece.bpe.model", "vocab.txt"] {
            let src = tokenizer_dir.join(extra);
            if src.is_file() {
                let bytes = std::fs::read(&src).map_err(|e| ModelError::io(&src, e))?;
                write_atomic(&dir.join(extra), &bytes)?;
            }
        }
        Ok(())
    }
}
