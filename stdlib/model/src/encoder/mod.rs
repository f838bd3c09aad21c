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
//!
//! The forward, backward and optimizer step are written once over
//! [`EncoderBackend`] (the decoder's [`crate::Backend`] and the encoder's
//! few extra calls): [`EncoderOn`] is an encoder on any backend, [`Encoder`]
//! the one on the CPU; `tests/encoder_backend.rs` runs the passes through a
//! second backend and gets the CPU's bits.

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
pub use train::{FineTuneConfig, FineTuner, FineTunerOn, StepInfo};

pub use crate::backend::EncoderBackend;
use crate::backend::{infallible, model_error, CpuBackend};
use crate::error::{write_atomic, ModelError};

/// An encoder with a 2-way classification head, its tensors on backend `B`.
pub struct EncoderOn<B: EncoderBackend> {
    pub config: EncoderConfig,
    /// Every tensor, in [`params::zeros`] order.
    pub params: B::Params,
    pub(crate) backend: B,
}

/// An encoder with a 2-way classification head on the CPU (f32 tensors).
pub type Encoder = EncoderOn<CpuBackend>;

impl Clone for Encoder {
    fn clone(&self) -> Encoder {
        Encoder {
            config: self.config.clone(),
            params: self.params.clone(),
            backend: CpuBackend,
        }
    }
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("config", &self.config)
            .field("tensors", &self.params.names.len())
            .finish()
    }
}

impl<B: EncoderBackend> EncoderOn<B> {
    /// A CPU encoder's tensors placed on `backend`.
    pub fn place(backend: B, encoder: Encoder) -> Result<EncoderOn<B>, ModelError> {
        Ok(EncoderOn {
            params: backend
                .params_from_host(encoder.params)
                .map_err(model_error)?,
            config: encoder.config,
            backend,
        })
    }

    /// The backend the tensors live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The same encoder on the CPU (the f32 master weights where the backend keeps two copies).
    pub fn to_cpu(&self) -> Result<Encoder, ModelError> {
        let params = self
            .backend
            .params_to_host(&self.params)
            .map_err(model_error)?
            .into_owned();
        Ok(Encoder {
            config: self.config.clone(),
            params,
            backend: CpuBackend,
        })
    }

    /// Logits (B×2) of a batch.
    pub fn try_logits(&self, batch: &Batch) -> Result<Vec<f32>, ModelError> {
        self.logits_on_backend(batch).map_err(model_error)
    }

    /// Logits (B×2) of a batch (inference: no dropout, nothing recorded),
    /// failing as the backend does.
    fn logits_on_backend(&self, batch: &Batch) -> Result<Vec<f32>, B::Error> {
        let (logits, _) = forward::forward_on(
            &self.backend,
            &self.config,
            &self.params,
            batch,
            false,
            None,
        )?;
        Ok(logits)
    }

    /// P(label 1) of each sequence: softmax of the two logits.
    pub fn probabilities(&self, seqs: &[Vec<u32>]) -> Result<Vec<f32>, ModelError> {
        let batch = Batch::new(&self.config, seqs)?;
        Ok(self
            .try_logits(&batch)?
            .chunks_exact(2)
            .map(|z| 1.0 / (1.0 + (z[0] - z[1]).exp()))
            .collect())
    }
}

impl Encoder {
    /// An encoder from its config and tensors (in [`params::zeros`] order).
    pub fn from_params(
        config: EncoderConfig,
        params: EncoderParams,
    ) -> Result<Encoder, ModelError> {
        let want = params::zeros(&config);
        if want.names != params.names
            || want.shapes != params.shapes
            || params
                .data
                .iter()
                .zip(&params.shapes)
                .any(|(d, s)| d.len() != s.iter().product::<usize>())
        {
            return Err(ModelError::Input(
                "the tensors do not match the encoder config's names and shapes".into(),
            ));
        }
        Ok(Encoder {
            config,
            params,
            backend: CpuBackend,
        })
    }

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
        Ok((
            Encoder {
                config,
                params,
                backend: CpuBackend,
            },
            report,
        ))
    }

    /// Logits (B×2) of a batch.
    pub fn logits(&self, batch: &Batch) -> Vec<f32> {
        infallible(self.logits_on_backend(batch))
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
