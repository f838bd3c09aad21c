//! `dedup`: removes exact duplicates (same normalised text) and MinHash
//! near-duplicates (word n-gram shingles, LSH with bands × rows, candidates
//! verified by their estimated Jaccard similarity).
//!
//! The first document of each duplicate cluster in corpus order is kept.
//! Memory: one signature (bands × rows u32) and one 16-byte hash per document.
//!
//! Sharded (`Op::sharding`): a shard task computes the exact keys and
//! signatures of its input shards (the expensive part) into
//! `signatures.bin`; the merge reads them in corpus order, clusters
//! globally and copies the kept documents: the same bytes as one task.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use rayon::prelude::*;
use serde::Deserialize;

use crate::artifacts::data::{DedupExample, DedupStats, ShardCount};
use crate::artifacts::JsonFile;

use super::corpus::{
    corpus_shards, for_each_doc, on_error_param, read_json_file, write_bytes_atomic,
    write_json_atomic, ErrorLog, OnError, ShardWriter,
};
use crate::op::{
    run_in_parts, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources,
    Sharded, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Dedup)]
}

/// Lower-cased words (maximal runs of alphanumeric characters).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect()
}

/// blake3 of the normalised text: lower-cased words joined by single spaces
/// (so case, punctuation and whitespace differences do not count).
pub fn exact_key(text: &str) -> [u8; 16] {
    let norm = words(text).join(" ");
    let h = blake3::hash(norm.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&h.as_bytes()[..16]);
    k
}

#[inline]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hashes of the word `n`-gram shingles (a text shorter than `n` words is one
/// shingle).
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    let hashes: Vec<u64> = words(text)
        .iter()
        .map(|w| {
            let h = blake3::hash(w.as_bytes());
            u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
        })
        .collect();
    if hashes.is_empty() {
        return Vec::new();
    }
    let n = n.max(1).min(hashes.len());
    let mut out: Vec<u64> = hashes
        .windows(n)
        .map(|win| {
            win.iter()
                .fold(0x1234_5678u64, |acc, &h| mix64(acc.rotate_left(17) ^ h))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The MinHash signature: for each of `perms` hash functions
/// h_i(x) = mix64(x ^ seed_i), the minimum over the shingles (low 32 bits).
pub fn signature(shingles: &[u64], perms: usize) -> Vec<u32> {
    (0..perms)
        .map(|i| {
            let seed = mix64(i as u64 + 0x9e37_79b9);
            shingles
                .iter()
                .map(|&s| mix64(s ^ seed) as u32)
                .min()
                .unwrap_or(u32::MAX)
        })
        .collect()
}

struct Union {
    parent: Vec<usize>,
}

impl Union {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    /// Joins two sets; the smaller index (earlier document) becomes the root.
    fn join(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = (ra.min(rb), ra.max(rb));
            self.parent[hi] = lo;
        }
    }
}

/// The `dedup` op.
pub struct Dedup;

impl Op for Dedup {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "dedup",
            version: 2,
            doc: "Removes exact duplicates (blake3 of lower-cased words) and MinHash near-duplicates (word n-gram shingles, LSH bands × rows, estimated Jaccard >= threshold); keeps the first document of each cluster.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact"),
                Param::optional("exact", Type::Bool, Value::Bool(true), "remove exact duplicates"),
                Param::optional("near", Type::Bool, Value::Bool(true), "remove MinHash near-duplicates"),
                Param::optional("ngram", Type::Int, Value::Int(5), "words per shingle").at_least(1.0),
                Param::optional("bands", Type::Int, Value::Int(20), "LSH bands").within(1.0, 512.0),
                Param::optional("rows", Type::Int, Value::Int(10), "MinHash values per band (bands × rows hash functions)").within(1.0, 64.0),
                Param::optional("threshold", Type::Float, Value::Float(0.8), "estimated Jaccard similarity at or above which a candidate pair is a duplicate"),
                Param::optional("docs_per_shard", Type::Int, Value::Int(100_000), "documents per output shard").at_least(1.0),
                on_error_param(),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "stats", ty: Type::File, doc: "dedup.json: documents in/out, exact and near duplicates removed, examples" }],
            resources: Resources::ALL_THREADS,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<DedupParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        run_in_parts(self, ctx, None)
    }

    fn sharding(&self) -> Option<&dyn Sharded> {
        Some(self)
    }
}

/// A document as pass 1 sees it: id, exact key, MinHash signature.
type DocSig = (String, [u8; 16], Vec<u32>);

/// `dedup`'s params (see its spec): the settings of one run.
#[derive(Clone, Deserialize)]
struct DedupParams {
    corpus: PathBuf,
    exact: bool,
    near: bool,
    ngram: usize,
    bands: usize,
    rows: usize,
    threshold: f64,
    docs_per_shard: u64,
    on_error: OnError,
}

/// Pass 1 over some shards: ids, exact keys and signatures, in parallel
/// over shards and documents, in corpus order.
fn signatures(
    ctx: &OpContext,
    st: &DedupParams,
    shards: &[PathBuf],
) -> OpResult<(Vec<DocSig>, ErrorLog)> {
    let (policy, ngram, perms, do_near) = (st.on_error, st.ngram, st.bands * st.rows, st.near);
    let per_shard: Vec<OpResult<(Vec<DocSig>, ErrorLog)>> = shards
        .par_iter()
        .map(|shard| {
            let mut docs = Vec::new();
            let mut errors = ErrorLog::default();
            let mut lines = Vec::new();
            super::corpus::for_each_line(shard, |n, l| {
                if !l.is_empty() {
                    lines.push((n, l.to_string()));
                }
                Ok(())
            })?;
            let parsed: Vec<_> = lines
                .par_iter()
                .map(|(n, l)| match super::corpus::parse_doc(shard, *n, l) {
                    Ok(d) => {
                        let sig = if do_near {
                            signature(&shingles(&d.text, ngram), perms)
                        } else {
                            Vec::new()
                        };
                        Ok((d.id.to_string(), exact_key(&d.text), sig))
                    }
                    Err(e) => Err(format!("{e}")),
                })
                .collect();
            for p in parsed {
                match p {
                    Ok(d) => docs.push(d),
                    Err(e) => {
                        let (place, what) = e.split_once(": ").unwrap_or(("?", e.as_str()));
                        policy.record(&mut errors, place, what)?;
                    }
                }
            }
            ctx.check_cancelled()?;
            ctx.progress.inc(1);
            Ok((docs, errors))
        })
        .collect();
    let mut docs = Vec::new();
    let mut errors = ErrorLog::default();
    for r in per_shard {
        let (d, e) = r?;
        docs.extend(d);
        errors.merge(e);
    }
    Ok((docs, errors))
}

/// A shard task's part: `signatures.bin` (per document: u32 LE id length,
/// the id, the 16-byte exact key, u32 LE signature length, the signature
/// as u32 LE) and `part.json` (its bad records).
fn write_part(dir: &Path, docs: &[DocSig], errors: &ErrorLog) -> OpResult<()> {
    let mut bytes = Vec::new();
    for (id, key, sig) in docs {
        bytes.extend_from_slice(&(id.len() as u32).to_le_bytes());
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&(sig.len() as u32).to_le_bytes());
        for v in sig {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    write_bytes_atomic(&dir.join("signatures.bin"), &bytes)?;
    write_json_atomic(&dir.join("part.json"), errors)
}

/// Appends a part's documents to `docs`; returns its bad records.
fn read_part(dir: &Path, docs: &mut Vec<DocSig>) -> OpResult<ErrorLog> {
    let path = dir.join("signatures.bin");
    let bytes = std::fs::read(&path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", path.display()))?;
    let bad = || miette!("{} is truncated or corrupt", path.display());
    let mut rest: &[u8] = &bytes;
    let mut take = |n: usize| -> OpResult<&[u8]> {
        if rest.len() < n {
            return Err(bad());
        }
        let (s, r) = rest.split_at(n);
        rest = r;
        Ok(s)
    };
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let total = bytes.len();
    let mut read = 0usize;
    while read < total {
        let n = word(take(4)?) as usize;
        let id = String::from_utf8(take(n)?.to_vec()).map_err(|_| bad())?;
        let mut key = [0u8; 16];
        key.copy_from_slice(take(16)?);
        let m = word(take(4)?) as usize;
        let sig = take(4 * m)?.chunks_exact(4).map(word).collect();
        read += 4 + n + 16 + 4 + 4 * m;
        docs.push((id, key, sig));
    }
    read_json_file(&dir.join("part.json"))
}

impl Sharded for Dedup {
    fn pieces(&self, ctx: &OpContext) -> OpResult<usize> {
        let st: DedupParams = ctx.params()?;
        Ok(corpus_shards(&st.corpus)?.len())
    }

    fn run_part(&self, ctx: &OpContext, range: Range<usize>) -> OpResult<()> {
        let st: DedupParams = ctx.params()?;
        let shards = corpus_shards(&st.corpus)?;
        let (docs, errors) = signatures(ctx, &st, &shards[range])?;
        write_part(&ctx.out_dir, &docs, &errors)
    }

    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs> {
        let st: DedupParams = ctx.params()?;
        let shards = corpus_shards(&st.corpus)?;
        let mut docs = Vec::new();
        let mut errors = ErrorLog::default();
        for part in parts {
            errors.merge(read_part(part, &mut docs)?);
        }
        cluster_and_copy(ctx, st, docs, errors, &shards)
    }
}

/// Clusters the documents (exact keys, then LSH candidates verified by
/// their signatures), and copies the first of each cluster, in corpus
/// order, into the output shards (pass 2).
fn cluster_and_copy(
    ctx: &OpContext,
    st: DedupParams,
    docs: Vec<DocSig>,
    mut errors: ErrorLog,
    shards: &[PathBuf],
) -> OpResult<Outputs> {
    super::corpus::name_error_places(&mut errors, ctx);
    let DedupParams {
        on_error: policy,
        bands,
        rows,
        ngram,
        threshold,
        exact: do_exact,
        near: do_near,
        docs_per_shard,
        corpus: _,
    } = st;
    let n = docs.len();
    let mut uf = Union {
        parent: (0..n).collect(),
    };
    let mut exact_dups = 0u64;
    let mut is_exact_dup = vec![false; n];
    if do_exact {
        let mut first: HashMap<[u8; 16], usize> = HashMap::with_capacity(n);
        for (i, d) in docs.iter().enumerate() {
            if let Some(&j) = first.get(&d.1) {
                uf.join(j, i);
                is_exact_dup[i] = true;
                exact_dups += 1;
            } else {
                first.insert(d.1, i);
            }
        }
    }
    let mut candidate_pairs = 0u64;
    if do_near {
        for b in 0..bands {
            let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
            for (i, d) in docs.iter().enumerate() {
                if is_exact_dup[i] {
                    continue;
                }
                let band = &d.2[b * rows..(b + 1) * rows];
                let key = band.iter().fold(b as u64, |acc, &v| mix64(acc ^ v as u64));
                buckets.entry(key).or_default().push(i);
            }
            for members in buckets.values().filter(|m| m.len() > 1) {
                let head = members[0];
                for &other in &members[1..] {
                    if uf.find(head) == uf.find(other) {
                        continue;
                    }
                    candidate_pairs += 1;
                    let same = docs[head]
                        .2
                        .iter()
                        .zip(&docs[other].2)
                        .filter(|(a, b)| a == b)
                        .count();
                    if same as f64 / (bands * rows) as f64 >= threshold {
                        uf.join(head, other);
                    }
                }
            }
        }
    }
    let mut examples = Vec::new();
    let mut remove = std::collections::HashSet::new();
    let mut near_dups = 0u64;
    for i in 0..n {
        let root = uf.find(i);
        if root != i {
            remove.insert(docs[i].0.clone());
            if !is_exact_dup[i] {
                near_dups += 1;
            }
            if examples.len() < 50 {
                examples.push(DedupExample {
                    removed: docs[i].0.clone(),
                    kept: docs[root].0.clone(),
                    kind: if is_exact_dup[i] { "exact" } else { "near" }.to_owned(),
                });
            }
        }
    }
    drop(docs);

    // pass 2: copy the kept documents
    let mut writer = ShardWriter::new(&ctx.out_dir, "docs", docs_per_shard);
    let mut kept = 0u64;
    for shard in shards {
        ctx.check_cancelled()?;
        let mut pending: Vec<String> = Vec::new();
        let r = for_each_doc(shard, |d, line| {
            if !remove.contains(d.id.as_ref()) {
                pending.push(line.to_string());
            }
            Ok(())
        });
        if let Err(e) = r {
            // a bad line was already recorded in pass 1; read line by line to skip it
            if policy == OnError::Fail {
                return Err(e);
            }
            pending.clear();
            super::corpus::for_each_line(shard, |nr, l| {
                if let Ok(d) = super::corpus::parse_doc(shard, nr, l) {
                    if !remove.contains(d.id.as_ref()) {
                        pending.push(l.to_string());
                    }
                }
                Ok(())
            })?;
        }
        for l in pending {
            writer.write_line(&l)?;
            kept += 1;
        }
    }
    let out_shards = writer.finish()?;
    let stats = DedupStats {
        documents_in: n as u64,
        documents_out: kept,
        exact_duplicates: exact_dups,
        near_duplicates: near_dups,
        candidate_pairs,
        ngram,
        bands,
        rows,
        threshold,
        errors,
        examples,
        shards: ShardCount::list(&out_shards),
    };
    stats.write(&ctx.out_dir)?;
    ctx.log(&format!(
        "kept {kept} of {n}: {exact_dups} exact and {near_dups} near duplicates removed"
    ));
    Ok(BTreeMap::from([(
        "stats".to_string(),
        Value::Path("dedup.json".into()),
    )]))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::super::corpus::testutil::*;
    use super::*;

    fn jaccard(a: &BTreeSet<u64>, b: &BTreeSet<u64>) -> f64 {
        let inter = a.intersection(b).count();
        inter as f64 / (a.len() + b.len() - inter) as f64
    }

    #[test]
    fn dedup_removes_exact_and_near_duplicates_of_the_demo() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = demo_corpus(&tmp.path().join("c"));
        let out = tmp.path().join("d");
        run_op(&Dedup, &[("corpus", Value::Path(corpus.clone()))], &out).unwrap();
        let all = read_corpus(&corpus);
        let kept = read_corpus(&out);
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("dedup.json")).unwrap())
                .unwrap();
        // independent reference: exact duplicates by raw text, Jaccard of word 5-gram sets
        let mut seen = HashSet::new();
        let exact = all
            .iter()
            .filter(|d| !seen.insert(d["text"].as_str().unwrap().to_string()))
            .count();
        assert_eq!(stats["exact_duplicates"], exact as u64);
        assert!(exact >= 12, "the demo holds 12 exact copies");
        let sets: Vec<BTreeSet<u64>> = all
            .iter()
            .map(|d| {
                let w: Vec<String> = d["text"]
                    .as_str()
                    .unwrap()
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(|w| w.to_lowercase())
                    .collect();
                w.windows(5)
                    .map(|x| {
                        use std::hash::{Hash, Hasher};
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        x.hash(&mut h);
                        h.finish()
                    })
                    .collect()
            })
            .collect();
        let kept_ids: HashSet<&str> = kept.iter().map(|d| d["id"].as_str().unwrap()).collect();
        let is_kept = |i: usize| kept_ids.contains(all[i]["id"].as_str().unwrap());
        // every pair with Jaccard >= 0.9 lost one member; no two kept docs are that similar
        let mut high_pairs = 0;
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                let s = jaccard(&sets[i], &sets[j]);
                if s >= 0.9 {
                    high_pairs += 1;
                    assert!(
                        !(is_kept(i) && is_kept(j)),
                        "docs {i} and {j} (Jaccard {s:.2}) both kept"
                    );
                }
            }
        }
        assert!(high_pairs >= 24, "{high_pairs}");
        // every removed doc is similar (>= 0.6) to an earlier document
        for i in (0..all.len()).filter(|&i| !is_kept(i)) {
            assert!(
                (0..i).any(|j| jaccard(&sets[i], &sets[j]) >= 0.6),
                "doc {i} removed without a similar earlier doc"
            );
        }
        assert!(stats["near_duplicates"].as_u64().unwrap() >= 12);
        assert_eq!(
            stats["documents_out"].as_u64().unwrap() as usize,
            kept.len()
        );
        assert_eq!(
            kept.len()
                + stats["exact_duplicates"].as_u64().unwrap() as usize
                + stats["near_duplicates"].as_u64().unwrap() as usize,
            all.len()
        );
    }

    #[test]
    fn dedup_writes_the_same_bytes_for_any_number_of_shard_tasks() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = tmp.path().join("c");
        // 6 shards: the planted copies fall in other shards than their
        // originals, so clusters cross the shard tasks.
        demo_corpus_in_shards(&corpus, 60);
        let out = assert_same_bytes_for_task_counts(
            &Dedup,
            &[("corpus", Value::Path(corpus.clone()))],
            &tmp.path().join("d"),
            &[2, 3, 6],
        );
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("dedup.json")).unwrap())
                .unwrap();
        // Exact duplicates by raw text, counted independently.
        let mut seen = HashSet::new();
        let exact = read_corpus(&corpus)
            .iter()
            .filter(|d| !seen.insert(d["text"].as_str().unwrap().to_string()))
            .count();
        assert_eq!(stats["exact_duplicates"], exact as u64);
    }

    #[test]
    fn a_failing_shard_task_fails_dedup_with_its_error() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = write_corpus_shards(
            &tmp.path().join("bad"),
            &[
                "{\"id\":\"a\",\"text\":\"eins zwei drei\"}\n",
                "{\"id\":\"b\"}\n",
            ],
        );
        let err = run_sharded(
            &Dedup,
            &[
                ("corpus", Value::Path(bad)),
                ("on_error", Value::Str("fail".into())),
            ],
            &tmp.path().join("o"),
            2,
        )
        .unwrap_err();
        let text = format!("{err:?}");
        assert!(
            text.contains("shard task 1 of 2 (pieces 1..2) failed"),
            "{text}"
        );
        assert!(text.contains("docs-00001.jsonl.zst:1"), "{text}");
    }

    #[test]
    fn minhash_estimates_jaccard() {
        // two sets of 200 shingles sharing 100: Jaccard 1/3
        let a: Vec<u64> = (0..200).collect();
        let b: Vec<u64> = (100..300).collect();
        let (sa, sb) = (signature(&a, 512), signature(&b, 512));
        let est = sa.iter().zip(&sb).filter(|(x, y)| x == y).count() as f64 / 512.0;
        assert!((est - 1.0 / 3.0).abs() < 0.07, "{est}");
        assert_eq!(exact_key("Hallo,  WELT!"), exact_key("hallo welt"));
        assert_ne!(exact_key("hallo welt"), exact_key("hallo welten"));
    }
}
