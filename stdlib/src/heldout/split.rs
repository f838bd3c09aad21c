//! `holdout`: a deterministic train / held-out split of a corpus.
//!
//! Rule: every document gets the key blake3(seed ‖ id ‖ 0x00 ‖ text); the
//! `max(1, round(fraction · n))` documents with the smallest keys are held
//! out (ties, impossible in practice, by id), the rest are the training
//! part. The split depends on the documents and the seed only, never on
//! shard boundaries or order, and both parts are corpora (`docs-*.jsonl.zst`)
//! that `pack` takes.

use std::path::PathBuf;
use std::sync::Arc;

use miette::miette;
use serde::{Deserialize, Serialize};

use crate::artifacts::JsonFile;
use crate::data::corpus::{corpus_shards, for_each_doc, ShardWriter};
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Holdout)]
}

/// `holdout.json`: the split's sizes and rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HoldoutStats {
    pub documents: usize,
    pub train_documents: usize,
    pub heldout_documents: usize,
    pub fraction: f64,
    pub seed: i64,
    pub rule: String,
}

impl JsonFile for HoldoutStats {
    const NAME: &'static str = "holdout.json";
    const WHAT: &'static str = "a holdout result";
    const FINAL_NEWLINE: bool = true;
}

const RULE: &str = "the max(1, round(fraction * n)) documents with the smallest blake3(seed || id || 0 || text) are held out";

/// A document's split key.
pub fn split_key(seed: i64, id: &str, text: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(id.as_bytes());
    h.update(&[0]);
    h.update(text.as_bytes());
    *h.finalize().as_bytes()
}

/// How many of `n` documents are held out.
pub fn heldout_count(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64).round() as usize).max(1)
}

/// The `holdout` op.
pub struct Holdout;

/// `holdout`'s params (see its spec).
#[derive(Deserialize)]
struct HoldoutParams {
    corpus: PathBuf,
    fraction: f64,
    seed: i64,
    docs_per_shard: u64,
}

impl Op for Holdout {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "holdout",
            version: 1,
            doc: "Splits a corpus into a training part and a held-out part (for the held-out loss): the max(1, round(fraction × n)) documents with the smallest blake3(seed, id, text) are held out, independent of shard order. Both parts are corpora; holdout.json has the sizes.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact (e.g. dedup's output)"),
                Param::optional("fraction", Type::Float, Value::Float(0.05), "share of documents held out").within(0.0, 1.0),
                Param::optional("seed", Type::Int, Value::Int(0), "changes which documents are held out"),
                Param::optional("docs_per_shard", Type::Int, Value::Int(100_000), "documents per output shard").at_least(1.0),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output { name: "train", ty: Type::Dir, doc: "train/: the corpus to train on" },
                Output { name: "heldout", ty: Type::Dir, doc: "heldout/: the held-out corpus" },
                Output { name: "stats", ty: Type::File, doc: "holdout.json" },
            ],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<HoldoutParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: HoldoutParams = ctx.params()?;
        let fraction = p.fraction;
        // The declared range is [0, 1]; its ends would leave a side empty.
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(miette!(
                "parameter `fraction`: expected a share strictly between 0 and 1, got {fraction}"
            ));
        }
        let seed = p.seed;
        let per_shard = p.docs_per_shard;
        let shards = corpus_shards(&p.corpus)?;
        // (key, id) of every document.
        let mut keys: Vec<([u8; 32], String)> = Vec::new();
        for shard in &shards {
            ctx.check_cancelled()?;
            for_each_doc(shard, |doc, _| {
                keys.push((split_key(seed, &doc.id, &doc.text), doc.id.into_owned()));
                Ok(())
            })?;
        }
        let n = keys.len();
        let held = heldout_count(n, fraction);
        if held >= n {
            return Err(miette!(
                help = "give a larger corpus or a smaller `fraction`",
                "holdout: {n} document(s), {held} would be held out and none left to train on"
            ));
        }
        keys.sort();
        let threshold = keys[held - 1].clone();
        drop(keys);
        let train_dir = ctx.out_dir.join("train");
        let heldout_dir = ctx.out_dir.join("heldout");
        for d in [&train_dir, &heldout_dir] {
            std::fs::create_dir_all(d).map_err(|e| miette!("creating {}: {e}", d.display()))?;
        }
        let mut train = ShardWriter::new(&train_dir, "docs", per_shard);
        let mut heldout = ShardWriter::new(&heldout_dir, "docs", per_shard);
        let (mut n_train, mut n_held) = (0, 0);
        for shard in &shards {
            ctx.check_cancelled()?;
            for_each_doc(shard, |doc, line| {
                let key = (split_key(seed, &doc.id, &doc.text), doc.id.to_string());
                if key <= threshold {
                    n_held += 1;
                    heldout.write_line(line)
                } else {
                    n_train += 1;
                    train.write_line(line)
                }
            })?;
        }
        train.finish()?;
        heldout.finish()?;
        let stats = HoldoutStats {
            documents: n,
            train_documents: n_train,
            heldout_documents: n_held,
            fraction,
            seed,
            rule: RULE.to_owned(),
        };
        stats.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "{n_held} of {n} documents held out, {n_train} to train on"
        ));
        let mut out = Outputs::new();
        out.insert("train".into(), Value::Path("train".into()));
        out.insert("heldout".into(), Value::Path("heldout".into()));
        out.insert("stats".into(), Value::Path("holdout.json".into()));
        Ok(out)
    }
}
