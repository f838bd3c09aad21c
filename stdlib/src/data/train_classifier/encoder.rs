//! `method: "encoder"`: a BERT / RoBERTa / XLM-RoBERTa encoder fine-tuned
//! whole with its sequence-classification head (flow-model's
//! `encoder::FineTunerOn`: cross-entropy, AdamW, linear warmup then linear
//! decay, clipping at norm 1, the config's dropout), as transformers' Trainer would
//! fine-tune `XLMRobertaForSequenceClassification`. The artifact is that
//! classifier's Hugging Face directory (config.json with id2label,
//! model.safetensors, tokenizer files) with classifier.json and
//! train_log.jsonl beside it.
//!
//! The fine-tuning runs on the node's device as `train` does: on the CUDA
//! backend when the device is `cuda` and it opens, else (with a notice) on
//! the CPU. Scoring (the splits' evaluation here, and `filter` with an
//! encoder classifier) runs on the CPU.

use std::path::{Path, PathBuf};

use flow_model::encoder::{
    Batch, Encoder, EncoderBackend, EncoderOn, EncoderTokenizer, FineTuneConfig, FineTuner,
    FineTunerOn,
};
use miette::{miette, IntoDiagnostic, WrapErr};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use super::{ClassifierInfo, Common, EncoderFacts, MethodFacts, Split, TrainLogLine};
use crate::artifacts::{finite, JsonLines};
use crate::op::{OpContext, OpResult, Outputs};

/// Tokens scored together in one forward pass when filtering.
const TOKENS_PER_FORWARD: usize = 8192;

/// A fine-tuned encoder classifier: label 1 is the positive class.
pub struct EncoderClassifier {
    pub encoder: Encoder,
    pub tokenizer: EncoderTokenizer,
    pub max_len: usize,
}

impl EncoderClassifier {
    /// Loads a classifier directory (a `*ForSequenceClassification` one).
    pub fn load(dir: &Path, max_len: usize) -> OpResult<EncoderClassifier> {
        let (encoder, report) = Encoder::load(dir, 0)
            .map_err(|e| miette!("cannot load the encoder classifier: {e}"))?;
        if !report.initialised.is_empty() {
            return Err(miette!(
                "{}: not a trained classifier: it lacks {}",
                dir.display(),
                report.initialised.join(", ")
            ));
        }
        let tokenizer = EncoderTokenizer::load(dir)
            .map_err(|e| miette!("cannot load the encoder's tokenizer: {e}"))?;
        let max_len = max_len.clamp(2, encoder.config.max_tokens());
        Ok(EncoderClassifier {
            encoder,
            tokenizer,
            max_len,
        })
    }

    /// P(positive) of token sequences: sorted by length and batched by a
    /// token budget, the batches in parallel.
    pub fn score_ids(&self, seqs: &[Vec<u32>]) -> Result<Vec<f32>, String> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut tokens = 0;
        for i in order {
            if groups.is_empty() || tokens + seqs[i].len() > TOKENS_PER_FORWARD {
                groups.push(Vec::new());
                tokens = 0;
            }
            tokens += seqs[i].len();
            groups.last_mut().expect("a group").push(i);
        }
        let scored: Vec<Result<Vec<(usize, f32)>, String>> = groups
            .par_iter()
            .map(|g| {
                let batch: Vec<Vec<u32>> = g.iter().map(|&i| seqs[i].clone()).collect();
                let p = self
                    .encoder
                    .probabilities(&batch)
                    .map_err(|e| e.to_string())?;
                Ok(g.iter().copied().zip(p).collect())
            })
            .collect();
        let mut out = vec![0.0f32; seqs.len()];
        for r in scored {
            for (i, p) in r? {
                out[i] = p;
            }
        }
        Ok(out)
    }

    /// P(positive) of each text; an error for a text that cannot be tokenized.
    pub fn score_batch(&self, texts: &[&str]) -> Vec<Result<f32, String>> {
        let ids: Vec<Result<Vec<u32>, String>> = texts
            .par_iter()
            .map(|t| {
                self.tokenizer
                    .encode(t, self.max_len)
                    .map_err(|e| e.to_string())
            })
            .collect();
        let ok: Vec<Vec<u32>> = ids
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        let scores = match self.score_ids(&ok) {
            Ok(s) => s,
            Err(e) => return texts.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut it = scores.into_iter();
        ids.into_iter()
            .map(|r| r.map(|_| it.next().expect("one score per tokenized text")))
            .collect()
    }
}

fn encoder_dir(dir: &str) -> OpResult<PathBuf> {
    if dir.is_empty() {
        return Err(miette!(
            help = "e.g. encoder: dir(\"models/xlm-roberta-base\")",
            "parameter `encoder`: method \"encoder\" needs a BERT / RoBERTa / XLM-RoBERTa model directory"
        ));
    }
    let p = PathBuf::from(dir);
    p.canonicalize()
        .into_diagnostic()
        .wrap_err_with(|| format!("encoder directory {} not found", p.display()))
}

pub(super) fn train_encoder(ctx: &OpContext, common: &Common) -> OpResult<Outputs> {
    let start = std::time::Instant::now();
    let p = &common.params;
    let dir = encoder_dir(&p.encoder)?;
    let (encoder, report) =
        Encoder::load(&dir, common.seed).map_err(|e| miette!("cannot load the encoder: {e}"))?;
    if !report.initialised.is_empty() {
        ctx.log(&format!(
            "new classification head (initialised with seed {}): {}",
            common.seed,
            report.initialised.join(", ")
        ));
    }
    let tokenizer = EncoderTokenizer::load(&dir)
        .map_err(|e| miette!("cannot load the encoder's tokenizer: {e}"))?;
    let want_len = p.max_len;
    let max_len = want_len.min(encoder.config.max_tokens());
    if max_len < want_len {
        ctx.log(&format!(
            "max_len {want_len} exceeds the model's {} positions: using {max_len}",
            encoder.config.max_tokens()
        ));
    }
    let batch_size = p.batch;
    let epochs = match p.epochs {
        e if e <= 0 => 3,
        e => e as u32,
    };
    let lr = match p.lr {
        l if l <= 0.0 => 2e-5,
        l => l,
    };
    let warmup_ratio = p.warmup_ratio;
    let (docs, missing) = common.labelled_docs(ctx)?;
    let tokenized: Vec<Result<Vec<u32>, String>> = docs
        .par_iter()
        .map(|(_, text, _, _)| tokenizer.encode(text, max_len).map_err(|e| e.to_string()))
        .collect();
    let mut examples: Vec<(Split, Vec<u32>, bool)> = Vec::new();
    let mut failed = 0u64;
    for ((id, _, split, y), t) in docs.iter().zip(tokenized) {
        match t {
            Ok(ids) => examples.push((*split, ids, *y)),
            Err(e) => {
                failed += 1;
                ctx.log(&format!("document {id}: {e} (left out)"));
            }
        }
    }
    let train: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].0 == Split::Train)
        .collect();
    if train.is_empty() {
        return Err(miette!("no training document could be tokenized"));
    }
    let steps_per_epoch = train.len().div_ceil(batch_size);
    let total_steps = steps_per_epoch * epochs as usize;
    let warmup_steps = (warmup_ratio * total_steps as f64).ceil() as usize;
    let cfg = FineTuneConfig {
        lr,
        weight_decay: p.weight_decay,
        dropout_seed: p.dropout.then_some(common.seed ^ 0xd0),
        warmup_steps,
        total_steps,
        ..FineTuneConfig::default()
    };
    ctx.progress.set_total(total_steps as u64, "steps");
    let run = FineTuneRun {
        examples: &examples,
        train: &train,
        batch_size,
        epochs,
        steps_per_epoch,
        seed: common.seed,
    };
    let weight_decay = cfg.weight_decay;
    let (trained, log, epoch_losses) =
        match crate::model::runtime::cuda_backend(ctx.device, &|line| ctx.log(line)) {
            Some(gpu) => {
                ctx.log(&format!("fine-tuning on CUDA device {}", gpu.ordinal()));
                let device =
                    |e: flow_model::ModelError| miette!("placing the encoder on the device: {e}");
                let tuner = FineTunerOn::open(EncoderOn::place(gpu, encoder).map_err(device)?, cfg)
                    .map_err(device)?;
                run.fine_tune(ctx, tuner)?
            }
            None => run.fine_tune(ctx, FineTuner::new(encoder, cfg))?,
        };
    TrainLogLine::write_all(&log, &ctx.out_dir)?;
    let clf = EncoderClassifier {
        encoder: trained,
        tokenizer,
        max_len,
    };
    let seqs: Vec<Vec<u32>> = examples.iter().map(|e| e.1.clone()).collect();
    let probs = clf.score_ids(&seqs).map_err(|e| miette!("scoring: {e}"))?;
    let scored: Vec<(Split, f32, bool)> = examples
        .iter()
        .zip(&probs)
        .map(|(e, &p)| (e.0, p, e.2))
        .collect();
    clf.encoder
        .save_classifier(
            &ctx.out_dir,
            [common.negative.as_str(), common.positive.as_str()],
            &dir,
        )
        .map_err(|e| miette!("saving the classifier: {e}"))?;
    let info = ClassifierInfo {
        method: "encoder".into(),
        weights_file: "model.safetensors".into(),
        epochs,
        max_tokens: Some(max_len),
        training: Some(MethodFacts::Encoder(EncoderFacts {
            architecture: clf.encoder.config.classifier_class().into(),
            labels: vec![common.negative.clone(), common.positive.clone()],
            batch: batch_size,
            lr,
            warmup_steps,
            total_steps,
            weight_decay,
            epoch_losses,
            initialised: report.initialised,
            tokenization_failures: failed,
            labelled_ids_not_in_corpus: missing,
            train_seconds: start.elapsed().as_secs_f64(),
        })),
        ..common.info()
    };
    common.finish(ctx, &scored, info)
}

/// The data and schedule of one fine-tuning run.
struct FineTuneRun<'a> {
    examples: &'a [(Split, Vec<u32>, bool)],
    train: &'a [usize],
    batch_size: usize,
    epochs: u32,
    steps_per_epoch: usize,
    seed: u64,
}

impl FineTuneRun<'_> {
    /// Trains `tuner` for the epochs (the training documents shuffled each
    /// epoch); the encoder (on the CPU), train_log.jsonl's lines and each
    /// epoch's mean loss.
    fn fine_tune<B: EncoderBackend>(
        &self,
        ctx: &OpContext,
        mut tuner: FineTunerOn<B>,
    ) -> OpResult<(Encoder, Vec<TrainLogLine>, Vec<f64>)> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ 0x0e0c);
        let mut order = self.train.to_vec();
        let mut log = Vec::new();
        let mut epoch_losses = Vec::new();
        for epoch in 0..self.epochs {
            order.shuffle(&mut rng);
            let mut sum = 0.0;
            for chunk in order.chunks(self.batch_size) {
                ctx.check_cancelled()?;
                let seqs: Vec<Vec<u32>> =
                    chunk.iter().map(|&i| self.examples[i].1.clone()).collect();
                let labels: Vec<u32> = chunk.iter().map(|&i| self.examples[i].2 as u32).collect();
                let batch = Batch::new(&tuner.encoder.config, &seqs)
                    .map_err(|e| miette!("training batch: {e}"))?;
                let step = tuner.step + 1;
                let s = tuner.try_step(&batch, &labels).map_err(|e| {
                    let e: flow_model::ModelError = e.into();
                    miette!("training step {step}: {e}")
                })?;
                sum += s.loss;
                log.push(TrainLogLine {
                    step: tuner.step,
                    epoch: epoch + 1,
                    loss: finite(s.loss),
                    lr: s.lr,
                    grad_norm: finite(s.grad_norm),
                });
                ctx.progress.inc(1);
            }
            let mean = sum / self.steps_per_epoch as f64;
            ctx.log(&format!(
                "epoch {}: mean training loss {mean:.4}",
                epoch + 1
            ));
            epoch_losses.push(mean);
        }
        // the gradients and moments go before the weights are copied
        let FineTunerOn { encoder, .. } = tuner;
        let encoder = encoder
            .to_cpu()
            .map_err(|e| miette!("reading the trained weights back: {e}"))?;
        Ok((encoder, log, epoch_losses))
    }
}
