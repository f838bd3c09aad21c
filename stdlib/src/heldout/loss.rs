//! `heldout_loss`: a model's mean next-token loss on a packed held-out set.
//!
//! The loss is the training loss's definition (flow_model's packed
//! sequences): every position whose next token belongs to the same
//! document predicts it, attention never crosses documents, positions
//! restart in each document, padding counts for nothing. Each document
//! piece of a sequence is scored through the runtime's public
//! `loglikelihood` (its first token as the context, the rest as the
//! continuation), so loss = −Σ log p / the number of predicted tokens, in
//! nats.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::miette;
use serde::Deserialize;

use crate::artifacts::data::PackInfo;
use crate::artifacts::eval::HeldoutLossResult;
use crate::artifacts::JsonFile;
use crate::model::runtime;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(HeldoutLoss)]
}

/// The pieces of a packed sequence that have something to predict: runs of
/// one document id (`u32::MAX` is padding), at least two tokens long.
pub fn document_pieces(tokens: &[u32], doc_ids: &[u32]) -> Vec<Vec<u32>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for i in 1..=tokens.len() {
        if i == tokens.len() || doc_ids[i] != doc_ids[start] {
            if doc_ids[start] != u32::MAX && i - start >= 2 {
                pieces.push(tokens[start..i].to_vec());
            }
            start = i;
        }
    }
    pieces
}

/// Sequences scored per batch of `loglikelihood` requests.
const BATCH: usize = 32;

fn tokenizer_hash(dir: &Path) -> Option<String> {
    let bytes = std::fs::read(dir.join("tokenizer.json")).ok()?;
    Some(blake3::hash(&bytes).to_hex().to_string())
}

/// The `heldout_loss` op.
pub struct HeldoutLoss;

/// `heldout_loss`'s params (see its spec).
#[derive(Deserialize)]
struct HeldoutLossParams {
    model: PathBuf,
    data: PathBuf,
    max_sequences: u64,
}

impl Op for HeldoutLoss {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "heldout_loss",
            version: 4,
            doc: "Mean next-token loss (nats) and perplexity of a model on a packed held-out set (pack of holdout's `heldout`), with the training loss's masking: per document, padding left out. Copies the model's checkpoint lineage, so the report plots it over tokens seen.",
            params: vec![
                Param::required("model", Type::Model, "the model to score (the source, a checkpoint, a merge)"),
                Param::required("data", Type::Dir, "a packed held-out set (the `pack` op's output)"),
                Param::optional("max_sequences", Type::Int, Value::Int(0), "score only the first this many sequences; 0 = all").at_least(0.0),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "result", ty: Type::File, doc: "heldout_loss.json" }],
            resources: Resources::MODEL,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<HeldoutLossParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: HeldoutLossParams = ctx.params()?;
        let (model_dir, data_dir, max_sequences) = (p.model, p.data, p.max_sequences);
        let pack = PackInfo::read(&data_dir)?;
        if let (packed_with, Some(model_tok)) =
            (pack.tokenizer_hash.as_str(), tokenizer_hash(&model_dir))
        {
            if !packed_with.is_empty() && packed_with != model_tok {
                return Err(miette!(
                    help = "pack the held-out corpus with this model's tokenizer (pack(corpus: .., tokenizer: <this model>))",
                    "heldout_loss: {} was packed with another tokenizer than {}'s",
                    data_dir.display(),
                    model_dir.display()
                ));
            }
        }
        let data = flow_model::train::PackedData::load(&data_dir).map_err(|e| miette!("{e}"))?;
        let n = if max_sequences == 0 {
            data.sequences
        } else {
            data.sequences.min(max_sequences as usize)
        };
        let checkpoint =
            runtime::read_checkpoint(&model_dir).map_err(|e| miette!("heldout_loss: {e}"))?;
        let model = runtime::load_for(ctx, &model_dir, runtime::WeightDtype::Float32)
            .map_err(|e| miette!("heldout_loss: {e}"))?;
        if data.seq_len > model.max_context() {
            return Err(miette!(
                help = "pack the held-out corpus with a seq_len the model takes",
                "heldout_loss: sequences of {} tokens, but {} takes at most {}",
                data.seq_len,
                model_dir.display(),
                model.max_context()
            ));
        }
        ctx.progress.set_total(n as u64, "sequences");
        let (mut logprob, mut tokens, mut pieces) = (0.0f64, 0usize, 0usize);
        for start in (0..n).step_by(BATCH) {
            ctx.check_cancelled()?;
            let end = (start + BATCH).min(n);
            let mut requests = Vec::new();
            for i in start..end {
                let seq = data.sequence(i);
                let ids = seq
                    .doc_ids
                    .clone()
                    .unwrap_or_else(|| vec![0; seq.tokens.len()]);
                for piece in document_pieces(&seq.tokens, &ids) {
                    tokens += piece.len() - 1;
                    requests.push((piece[..1].to_vec(), piece[1..].to_vec()));
                }
            }
            pieces += requests.len();
            let scored = model
                .loglikelihood(&requests)
                .map_err(|e| miette!("heldout_loss: scoring failed: {e}"))?;
            for r in scored {
                if !r.logprob.is_finite() {
                    return Err(miette!(
                        help = "pack the held-out corpus with this model's tokenizer",
                        "heldout_loss: a sequence of {} holds tokens {} cannot score (out of its vocabulary)",
                        data_dir.display(),
                        model_dir.display()
                    ));
                }
                logprob += r.logprob;
            }
            ctx.progress.inc((end - start) as u64);
        }
        let loss = (tokens > 0).then(|| -logprob / tokens as f64);
        let doc = HeldoutLossResult {
            loss,
            perplexity: loss.map(f64::exp),
            tokens,
            sequences: n,
            pieces,
            model: ctx.input_name(&model_dir),
            checkpoint,
        };
        doc.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "held-out loss {} over {tokens} tokens of {n} sequences",
            loss.map_or("undefined (nothing to predict)".to_owned(), |l| format!(
                "{l:.4}"
            ))
        ));
        let mut out = Outputs::new();
        out.insert("result".into(), Value::Path("heldout_loss.json".into()));
        Ok(out)
    }
}
