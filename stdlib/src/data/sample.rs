//! `sample`: a seeded, reproducible sample of N documents of a corpus.
//!
//! Each document gets the score blake3(seed, id) and the N smallest scores
//! win (bottom-k sampling). The sample depends only on the seed and the set of
//! ids, not on shard order or count, and is a uniform sample without
//! replacement; memory holds only N documents.

use std::collections::{BTreeMap, BinaryHeap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::corpus::{corpus_shards, for_each_doc, ShardWriter};
use crate::artifacts::data::{SampleStats, ShardCount};
use crate::artifacts::JsonFile;
use crate::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Sample)]
}

/// The sampling score of a document id under a seed.
pub fn sample_score(seed: u64, id: &str) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(id.as_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// The `sample` op.
pub struct Sample;

/// `sample`'s params (see its spec).
#[derive(Deserialize)]
struct SampleParams {
    corpus: PathBuf,
    n: usize,
    seed: i64,
    docs_per_shard: u64,
}

impl Op for Sample {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "sample",
            version: 1,
            doc: "Seeded sample of n documents of a corpus (bottom-k of blake3(seed, id)): the same seed gives the same sample whatever the shard order.",
            params: vec![
                Param::required("corpus", Type::Dir, "a corpus artifact (output of corpus, filter, dedup, sample)"),
                Param::required("n", Type::Int, "documents to draw (all of them if the corpus is smaller)").at_least(1.0),
                Param::optional("seed", Type::Int, Value::Int(0), "sampling seed"),
                Param::optional("docs_per_shard", Type::Int, Value::Int(100_000), "documents per output shard").at_least(1.0),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "stats", ty: Type::File, doc: "sample.json: documents seen and drawn, seed" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<SampleParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let p: SampleParams = ctx.params()?;
        let n = p.n;
        // A negative seed is its two's-complement bits, as it always was.
        let seed = p.seed as u64;
        let shards = corpus_shards(&p.corpus)?;
        // max-heap on score: the root is the worst of the current best n
        let mut heap: BinaryHeap<(u64, String, String)> = BinaryHeap::new();
        let mut seen = 0u64;
        for shard in &shards {
            ctx.check_cancelled()?;
            for_each_doc(shard, |doc, line| {
                seen += 1;
                let score = sample_score(seed, &doc.id);
                if heap.len() < n {
                    heap.push((score, doc.id.to_string(), line.to_string()));
                } else if let Some(top) = heap.peek() {
                    if (score, doc.id.as_ref()) < (top.0, top.1.as_str()) {
                        heap.pop();
                        heap.push((score, doc.id.to_string(), line.to_string()));
                    }
                }
                Ok(())
            })?;
        }
        let mut chosen: Vec<_> = heap.into_vec();
        chosen.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        // ascending score: the first k of a sample of n are the sample of k
        let mut writer = ShardWriter::new(&ctx.out_dir, "docs", p.docs_per_shard);
        for (_, _, line) in &chosen {
            writer.write_line(line)?;
        }
        let shards_out = writer.finish()?;
        let stats = SampleStats {
            seen,
            documents: chosen.len(),
            seed,
            method: SampleStats::METHOD.to_string(),
            shards: ShardCount::list(&shards_out),
        };
        stats.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "sampled {} of {seen} documents (seed {seed})",
            chosen.len()
        ));
        Ok(BTreeMap::from([(
            "stats".to_string(),
            Value::Path("sample.json".into()),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::testutil::*;
    use super::super::corpus::Corpus;
    use super::*;
    use crate::op::testing::assert_outside_declared_range;

    fn ids(dir: &std::path::Path) -> Vec<String> {
        read_corpus(dir)
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn sample_is_reproducible_and_independent_of_shard_order() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = demo_corpus(&tmp.path().join("c"));
        // the same documents, sharded differently and in reverse order
        let lines: Vec<String> = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
            .unwrap()
            .lines()
            .rev()
            .map(String::from)
            .collect();
        std::fs::create_dir_all(tmp.path().join("rev")).unwrap();
        for (i, chunk) in lines.chunks(50).enumerate() {
            std::fs::write(
                tmp.path().join(format!("rev/part{i}.jsonl")),
                chunk.join("\n"),
            )
            .unwrap();
        }
        let reversed = tmp.path().join("c2");
        run_op(
            &Corpus,
            &[
                ("input", Value::Path(tmp.path().join("rev"))),
                ("docs_per_shard", Value::Int(37)),
            ],
            &reversed,
        )
        .unwrap();

        let run = |c: &std::path::Path, seed: i64, out: &str| {
            let o = tmp.path().join(out);
            run_op(
                &Sample,
                &[
                    ("corpus", Value::Path(c.to_path_buf())),
                    ("n", Value::Int(60)),
                    ("seed", Value::Int(seed)),
                ],
                &o,
            )
            .unwrap();
            ids(&o)
        };
        let a = run(&corpus, 7, "s1");
        let b = run(&reversed, 7, "s2");
        let c = run(&corpus, 8, "s3");
        assert_eq!(a.len(), 60);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut uniq = a.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 60, "sampling is without replacement");
        // the sample is exactly the 60 smallest scores (independent recomputation)
        let mut all: Vec<(u64, String)> = ids(&corpus)
            .into_iter()
            .map(|id| (sample_score(7, &id), id))
            .collect();
        all.sort();
        let expected: Vec<String> = all.into_iter().take(60).map(|x| x.1).collect();
        assert_eq!(a, expected);
        // scores are blake3 of seed bytes then id bytes
        let direct = blake3::hash(&[7u64.to_le_bytes().as_slice(), b"x"].concat());
        assert_eq!(
            sample_score(7, "x"),
            u64::from_le_bytes(direct.as_bytes()[..8].try_into().unwrap())
        );
    }

    #[test]
    fn sample_larger_than_corpus_takes_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = demo_corpus(&tmp.path().join("c"));
        let o = tmp.path().join("s");
        run_op(
            &Sample,
            &[
                ("corpus", Value::Path(corpus.clone())),
                ("n", Value::Int(100_000)),
            ],
            &o,
        )
        .unwrap();
        assert_eq!(ids(&o).len(), ids(&corpus).len());
        let stats = SampleStats::read(&o).unwrap();
        assert_eq!(
            (stats.seen, stats.documents),
            (ids(&corpus).len() as u64, ids(&corpus).len())
        );
        let written = std::fs::read(o.join("sample.json")).unwrap();
        assert_eq!(stats.to_bytes().unwrap(), written);
        assert_outside_declared_range(&Sample, "n", Value::Int(0));
    }
}
