//! `filter`: applies a trained classifier to a whole corpus, streaming, in
//! parallel over shards and over chunks of documents within a shard.
//!
//! Output shard `docs-NNNNN` holds the kept documents of input shard NNNNN,
//! in their input order (raw lines passed through unchanged unless a score
//! field is requested), so the output does not depend on the thread count.
//!
//! Sharded (`Op::sharding`): a piece is an input shard; a shard task
//! filters its shards into their output shards and writes their counts to
//! `part.json`; the merge links the output shards into place and sums the
//! counts into `filter.json`. The same bytes however the shards are cut
//! into tasks, locally or as a Slurm job array.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::corpus::{
    corpus_shards, for_each_line, link_or_copy, on_error_param, parse_doc, read_json_file,
    write_json_atomic, OnError,
};
use super::train_classifier::{load_any_classifier, Classifier};
#[cfg(test)]
use super::train_classifier::{load_classifier, NgramModel};
use crate::artifacts::data::{FilterStats, KeptCounts};
use crate::artifacts::JsonFile;
use crate::op::{
    run_in_parts, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources,
    Sharded, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Filter)]
}

/// Documents scored together by the parallel workers of one shard.
const CHUNK: usize = 2048;

pub use crate::artifacts::data::ShardStats;

/// `filter`'s params (see its spec).
#[derive(Clone, Deserialize)]
struct FilterParams {
    corpus: PathBuf,
    classifier: PathBuf,
    threshold: f64,
    keep: Keep,
    score_field: String,
    on_error: OnError,
}

/// Which documents `filter` keeps.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Keep {
    /// Score at or above the threshold: the positive class.
    Above,
    /// The rest.
    Below,
}

impl Keep {
    fn name(self) -> &'static str {
        match self {
            Keep::Above => "above",
            Keep::Below => "below",
        }
    }
}

/// The lines of a shard read but not yet filtered, in one buffer (no
/// allocation per document): (line number, byte range in `text`).
#[derive(Default)]
struct Chunk {
    text: String,
    lines: Vec<(u64, Range<usize>)>,
}

struct Decision {
    keep: bool,
    score: f32,
    tokens: u64,
    chars: u64,
    line: String,
}

/// Whitespace-separated tokens (ASCII whitespace, as `split_ascii_whitespace`)
/// and characters of a text: a token starts at a non-whitespace byte that
/// opens the text or follows whitespace; a character at every byte that is
/// not a UTF-8 continuation byte. Written as counts over the bytes (no
/// state carried from byte to byte) so that the compiler vectorises them.
fn count_tokens_chars(text: &str) -> (u64, u64) {
    let b = text.as_bytes();
    let chars = b.iter().filter(|&&c| c & 0xc0 != 0x80).count();
    let first = b.first().is_some_and(|c| !c.is_ascii_whitespace()) as usize;
    let later = b
        .iter()
        .zip(b.get(1..).unwrap_or_default())
        .filter(|(p, c)| p.is_ascii_whitespace() && !c.is_ascii_whitespace())
        .count();
    ((first + later) as u64, chars as u64)
}

/// Settings shared by all shards.
pub struct FilterSettings<'a> {
    pub model: &'a Classifier,
    pub threshold: f32,
    pub keep_above: bool,
    pub score_field: &'a str,
    pub policy: OnError,
}

/// Filters one shard into `out_path`.
pub fn filter_shard(
    input: &Path,
    out_path: &Path,
    s: &FilterSettings,
    cancel: &std::sync::atomic::AtomicBool,
) -> OpResult<ShardStats> {
    let mut stats = ShardStats {
        file: out_path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    let tmp = out_path.with_extension("tmp");
    let file = File::create(&tmp)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot create {}", tmp.display()))?;
    let mut enc = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, file), 3)
        .into_diagnostic()?;
    let mut chunk = Chunk::default();
    let mut flush = |chunk: &mut Chunk, stats: &mut ShardStats| -> OpResult<()> {
        if cancel.load(Ordering::Relaxed) {
            return Err(miette!("cancelled"));
        }
        let pending: Vec<(u64, &str)> = chunk
            .lines
            .iter()
            .map(|(n, at)| (*n, &chunk.text[at.clone()]))
            .collect();
        // parse in parallel, score the chunk as one batch (the encoder groups
        // documents by length into forward passes), then decide in parallel
        let parsed: Vec<Result<super::corpus::DocRef<'_>, String>> = pending
            .par_iter()
            .map(|(line_no, line)| parse_doc(input, *line_no, line).map_err(|e| e.to_string()))
            .collect();
        let texts: Vec<&str> = parsed
            .iter()
            .filter_map(|d| d.as_ref().ok().map(|d| d.text.as_ref()))
            .collect();
        let mut scores = s.model.score_batch(&texts).into_iter();
        let scored: Vec<Result<(super::corpus::DocRef<'_>, f32), String>> = parsed
            .into_iter()
            .zip(pending.iter())
            .map(|(d, (line_no, _))| {
                let d = d?;
                let score = scores
                    .next()
                    .expect("one score per parsed document")
                    .map_err(|e| {
                        format!("{}:{line_no}: document {}: {e}", input.display(), d.id)
                    })?;
                Ok((d, score))
            })
            .collect();
        let decided: Vec<Result<Decision, String>> = scored
            .into_par_iter()
            .zip(pending.par_iter())
            .map(|(r, (line_no, line))| {
                let (doc, score) = r?;
                let keep = if s.keep_above {
                    score >= s.threshold
                } else {
                    score < s.threshold
                };
                let (tokens, chars) = count_tokens_chars(&doc.text);
                let out = if keep && !s.score_field.is_empty() {
                    let mut v: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(line)
                            .map_err(|e| format!("{}:{line_no}: {e}", input.display()))?;
                    v.insert(s.score_field.to_string(), serde_json::json!(score));
                    serde_json::to_string(&v).map_err(|e| e.to_string())?
                } else {
                    String::new()
                };
                Ok(Decision {
                    keep,
                    score,
                    tokens,
                    chars,
                    line: out,
                })
            })
            .collect();
        for ((_, line), d) in pending.iter().zip(decided) {
            match d {
                Ok(d) => {
                    stats.counts.add(d.tokens, d.chars, d.keep);
                    stats.score_histogram[((d.score * 10.0) as usize).min(9)] += 1;
                    if d.keep {
                        let text = if s.score_field.is_empty() {
                            line
                        } else {
                            d.line.as_str()
                        };
                        enc.write_all(text.as_bytes()).into_diagnostic()?;
                        enc.write_all(b"\n").into_diagnostic()?;
                    }
                }
                Err(e) => {
                    let (place, what) = e.split_once(": ").unwrap_or(("?", e.as_str()));
                    s.policy.record(&mut stats.errors, place, what)?;
                }
            }
        }
        drop(pending);
        chunk.text.clear();
        chunk.lines.clear();
        Ok(())
    };
    for_each_line(input, |n, line| {
        if !line.is_empty() {
            let start = chunk.text.len();
            chunk.text.push_str(line);
            chunk.lines.push((n, start..chunk.text.len()));
            if chunk.lines.len() >= CHUNK {
                flush(&mut chunk, &mut stats)?;
            }
        }
        Ok(())
    })?;
    flush(&mut chunk, &mut stats)?;
    let mut w = enc.finish().into_diagnostic()?;
    w.flush().into_diagnostic()?;
    drop(w);
    std::fs::rename(&tmp, out_path).into_diagnostic()?;
    Ok(stats)
}

/// The `filter` op.
pub struct Filter;

impl Op for Filter {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "filter",
            version: 6,
            doc: "Applies a train_classifier model to every document of a corpus (parallel over shards and documents); keeps those scoring at or above the threshold; filter.json has per-shard documents, whitespace tokens and characters in and out.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact"),
                Param::required("classifier", Type::Dir, "train_classifier artifact"),
                Param::optional("threshold", Type::Float, Value::Float(-1.0), "score threshold; negative: the classifier's chosen threshold"),
                Param::optional("keep", Type::enum_of::<Keep>(), Value::Str("above".into()), "above: keep score >= threshold (the positive class); below: keep the rest"),
                Param::optional("score_field", Type::Str, Value::Str(String::new()), "if set, kept records get the score under this field"),
                on_error_param(),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "stats", ty: Type::File, doc: "filter.json" }],
            resources: Resources::ALL_THREADS,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<FilterParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        run_in_parts(self, ctx, None)
    }

    fn sharding(&self) -> Option<&dyn Sharded> {
        Some(self)
    }
}

/// What a shard task of `filter` leaves in its part: its output shards and
/// this, as `part.json`.
#[derive(Serialize, Deserialize)]
struct FilterPart {
    threshold: f32,
    positive: String,
    per_shard: Vec<ShardStats>,
}

impl Sharded for Filter {
    fn pieces(&self, ctx: &OpContext) -> OpResult<usize> {
        let p: FilterParams = ctx.params()?;
        Ok(corpus_shards(&p.corpus)?.len())
    }

    fn run_part(&self, ctx: &OpContext, range: Range<usize>) -> OpResult<()> {
        let p: FilterParams = ctx.params()?;
        let (info, model) = load_any_classifier(&p.classifier)?;
        let t = p.threshold;
        let threshold = if t < 0.0 { info.threshold() } else { t } as f32;
        let shards = corpus_shards(&p.corpus)?;
        let settings = FilterSettings {
            model: &model,
            threshold,
            keep_above: p.keep == Keep::Above,
            score_field: &p.score_field,
            policy: p.on_error,
        };
        let start = std::time::Instant::now();
        let results: Vec<OpResult<ShardStats>> = range
            .clone()
            .into_par_iter()
            .map(|i| {
                let out = ctx.out_dir.join(format!("docs-{i:05}.jsonl.zst"));
                let r = filter_shard(&shards[i], &out, &settings, ctx.cancel);
                ctx.progress.inc(1);
                r
            })
            .collect();
        let per_shard: Vec<ShardStats> = results.into_iter().collect::<OpResult<_>>()?;
        let total = KeptCounts::sum(per_shard.iter().map(|s| &s.counts));
        let (docs_in, docs_out) = (total.documents_in, total.documents_out);
        let secs = start.elapsed().as_secs_f64();
        // Timing goes to the log only: the artifact's bytes must not
        // depend on the machine.
        ctx.log(&format!(
            "shards {}..{}: kept {docs_out} of {docs_in} documents in {secs:.2}s ({:.0} docs/s, {} threads)",
            range.start,
            range.end,
            docs_in as f64 / secs.max(1e-9),
            ctx.threads
        ));
        write_json_atomic(
            &ctx.out_dir.join("part.json"),
            &FilterPart {
                threshold,
                positive: info.positive,
                per_shard,
            },
        )
    }

    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs> {
        let mut per_shard: Vec<ShardStats> = Vec::new();
        let mut head: Option<(f32, String)> = None;
        for part in parts {
            let p: FilterPart = read_json_file(&part.join("part.json"))?;
            for s in &p.per_shard {
                link_or_copy(&part.join(&s.file), &ctx.out_dir.join(&s.file))?;
            }
            head.get_or_insert((p.threshold, p.positive));
            per_shard.extend(p.per_shard);
        }
        for s in &mut per_shard {
            super::corpus::name_error_places(&mut s.errors, ctx);
        }
        let (threshold, positive) =
            head.ok_or_else(|| miette!("internal: filter merged no parts"))?;
        let p: FilterParams = ctx.params()?;
        let stats = FilterStats {
            threshold: threshold as f64,
            keep: p.keep.name().to_string(),
            positive,
            counts: KeptCounts::sum(per_shard.iter().map(|s| &s.counts)),
            errors: per_shard.iter().map(|s| s.errors.count).sum(),
            per_shard,
        };
        stats.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "kept {} of {} documents",
            stats.counts.documents_out, stats.counts.documents_in
        ));
        Ok(BTreeMap::from([(
            "stats".to_string(),
            Value::Path("filter.json".into()),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::testutil::*;
    use super::super::train_classifier::tests::{golden_xlmr, train_demo_classifier};
    use super::*;

    #[test]
    fn filter_keeps_what_the_classifier_scores_above_threshold() {
        let tmp = tempfile::tempdir().unwrap();
        // several shards so the parallel path and the renumbering are exercised
        let (corpus, clf) = demo_corpus_and_classifier(tmp.path());
        let out = tmp.path().join("f");
        run_op(
            &Filter,
            &[
                ("corpus", Value::Path(corpus.clone())),
                ("classifier", Value::Path(clf.clone())),
                ("score_field", Value::Str("med_score".into())),
            ],
            &out,
        )
        .unwrap();
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("filter.json")).unwrap())
                .unwrap();
        let (_, model) = load_classifier(&clf).unwrap();
        let threshold = stats["threshold"].as_f64().unwrap() as f32;
        let all = read_corpus(&corpus);
        let expected: Vec<&serde_json::Value> = all
            .iter()
            .filter(|d| model.score(d["text"].as_str().unwrap()) >= threshold)
            .collect();
        let kept = read_corpus(&out);
        assert_eq!(kept.len(), expected.len());
        for (k, e) in kept.iter().zip(&expected) {
            assert_eq!(k["id"], e["id"]);
            assert!((k["med_score"].as_f64().unwrap() as f32) >= threshold);
        }
        assert_eq!(stats["documents_in"], all.len() as u64);
        assert_eq!(stats["documents_out"], kept.len() as u64);
        // roughly 40% of the demo is medical
        let frac = kept.len() as f64 / all.len() as f64;
        assert!((0.25..0.6).contains(&frac), "{frac}");
        let tokens: u64 = all
            .iter()
            .map(|d| d["text"].as_str().unwrap().split_whitespace().count() as u64)
            .sum();
        assert_eq!(stats["tokens_in"], tokens);
        assert_eq!(stats["per_shard"].as_array().unwrap().len(), 6);
        // the complement with keep: below
        let below = tmp.path().join("b");
        run_op(
            &Filter,
            &[
                ("corpus", Value::Path(corpus)),
                ("classifier", Value::Path(clf)),
                ("keep", Value::Str("below".into())),
            ],
            &below,
        )
        .unwrap();
        assert_eq!(read_corpus(&below).len() + kept.len(), all.len());
    }

    /// The demo corpus in 6 shards and an n-gram classifier trained on it.
    fn demo_corpus_and_classifier(dir: &Path) -> (PathBuf, PathBuf) {
        let corpus = dir.join("c");
        demo_corpus_in_shards(&corpus, 60);
        let clf = dir.join("clf");
        train_demo_classifier(&corpus, &clf, &[]);
        (corpus, clf)
    }

    #[test]
    fn filter_writes_the_same_bytes_for_any_number_of_shard_tasks() {
        let tmp = tempfile::tempdir().unwrap();
        let (corpus, clf) = demo_corpus_and_classifier(tmp.path());
        let params = [
            ("corpus", Value::Path(corpus.clone())),
            ("classifier", Value::Path(clf.clone())),
            ("score_field", Value::Str("med_score".into())),
        ];
        // 6 input shards: tasks of 3+3, 2+2+1+1, one each, and a limit
        // above the shard count.
        let out = assert_same_bytes_for_task_counts(
            &Filter,
            &params,
            &tmp.path().join("f"),
            &[2, 4, 6, 64],
        );
        // The one-task output is what the classifier keeps, shard by shard.
        let (_, model) = load_classifier(&clf).unwrap();
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("filter.json")).unwrap())
                .unwrap();
        let threshold = stats["threshold"].as_f64().unwrap() as f32;
        for (i, shard) in corpus_shards(&corpus).unwrap().iter().enumerate() {
            let name = format!("docs-{i:05}.jsonl.zst");
            let text =
                String::from_utf8(zstd::decode_all(&std::fs::read(shard).unwrap()[..]).unwrap())
                    .unwrap();
            let expected: Vec<String> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                .filter(|d| model.score(d["text"].as_str().unwrap()) >= threshold)
                .map(|d| d["id"].as_str().unwrap().to_string())
                .collect();
            let kept = String::from_utf8(
                zstd::decode_all(&std::fs::read(out.join(&name)).unwrap()[..]).unwrap(),
            )
            .unwrap();
            let kept: Vec<String> = kept
                .lines()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(kept, expected, "{name}");
            assert_eq!(stats["per_shard"][i]["file"], name.as_str());
        }
        // No timing in the artifact: its bytes do not depend on the machine.
        assert!(stats.get("seconds").is_none() && stats.get("threads").is_none());
    }

    #[test]
    fn a_failing_shard_task_fails_filter_with_its_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, clf) = demo_corpus_and_classifier(tmp.path());
        let bad = write_corpus_shards(
            &tmp.path().join("bad"),
            &[
                "{\"id\":\"a\",\"text\":\"Fieber und Husten\"}\n",
                "{\"id\":\"b\",\"text\":\"Fussball am Sonntag\"}\n",
                "{\"id\":\"c\",\"text\":\"Kopfschmerzen\"}\n{\"id\":\"d\"}\n",
            ],
        );
        let out = tmp.path().join("o");
        let err = run_sharded(
            &Filter,
            &[
                ("corpus", Value::Path(bad)),
                ("classifier", Value::Path(clf)),
                ("on_error", Value::Str("fail".into())),
            ],
            &out,
            3,
        )
        .unwrap_err();
        assert_third_shard_task_failed(&err, "docs-00002.jsonl.zst:2", &out, "filter.json");
    }

    #[test]
    fn filter_scores_with_an_encoder_classifier_in_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = tmp.path().join("c");
        demo_corpus_in_shards(&corpus, 90);
        let clf = tmp.path().join("clf");
        train_demo_classifier(
            &corpus,
            &clf,
            &[
                ("method", Value::Str("encoder".into())),
                ("encoder", Value::Path(golden_xlmr())),
                ("max_len", Value::Int(24)),
                ("epochs", Value::Int(1)),
                ("lr", Value::Float(1e-3)),
            ],
        );
        let out = tmp.path().join("f");
        run_op(
            &Filter,
            &[
                ("corpus", Value::Path(corpus.clone())),
                ("classifier", Value::Path(clf.clone())),
                ("threshold", Value::Float(0.0)),
                ("score_field", Value::Str("score".into())),
            ],
            &out,
        )
        .unwrap();
        // every document kept (threshold 0) with the score the classifier gives it alone
        let (_, model) = load_any_classifier(&clf).unwrap();
        let all = read_corpus(&corpus);
        let kept = read_corpus(&out);
        assert_eq!(kept.len(), all.len());
        for (k, d) in kept.iter().zip(&all) {
            assert_eq!(k["id"], d["id"]);
            let alone = model.score(d["text"].as_str().unwrap()).unwrap();
            assert!((k["score"].as_f64().unwrap() as f32 - alone).abs() < 1e-5);
        }
    }

    #[test]
    fn token_and_char_counts_match_std() {
        for t in [
            "",
            "  ",
            "Übelkeit und  Fieber\n\tnach 3 Tagen ",
            "a",
            "ä ö ü ß",
        ] {
            assert_eq!(
                count_tokens_chars(t),
                (
                    t.split_ascii_whitespace().count() as u64,
                    t.chars().count() as u64
                ),
                "{t:?}"
            );
        }
    }

    #[test]
    fn filter_reports_a_bad_line_with_shard_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus = demo_corpus(&tmp.path().join("c"));
        let clf = tmp.path().join("clf");
        train_demo_classifier(&corpus, &clf, &[]);
        let bad = write_corpus_shards(
            &tmp.path().join("bad"),
            &["{\"id\":\"a\",\"text\":\"Fieber und Husten\"}\n{\"id\":\"b\"}\n"],
        );
        let err = run_op(
            &Filter,
            &[
                ("corpus", Value::Path(bad.clone())),
                ("classifier", Value::Path(clf.clone())),
                ("on_error", Value::Str("fail".into())),
            ],
            &tmp.path().join("o"),
        )
        .unwrap_err();
        assert!(
            format!("{err:?}").contains("docs-00000.jsonl.zst:2"),
            "{err:?}"
        );
        let out = tmp.path().join("o2");
        run_op(
            &Filter,
            &[
                ("corpus", Value::Path(bad)),
                ("classifier", Value::Path(clf)),
                ("threshold", Value::Float(0.0)),
            ],
            &out,
        )
        .unwrap();
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("filter.json")).unwrap())
                .unwrap();
        assert_eq!(stats["errors"], 1);
        assert_eq!(stats["documents_in"], 1);
        assert_eq!(stats["documents_out"], 1);
    }

    /// Synthetic German-like documents of about `chars` characters.
    fn synth_docs(n: usize, chars: usize, seed: u64) -> Vec<String> {
        use rand::{Rng, SeedableRng};
        let words = [
            "der",
            "die",
            "das",
            "und",
            "mit",
            "bei",
            "einer",
            "Behandlung",
            "Patienten",
            "Krankenhaus",
            "Therapie",
            "Mannschaft",
            "Spiel",
            "Regierung",
            "Stadt",
            "Zwiebeln",
            "Wanderung",
            "Geräte",
            "Übelkeit",
            "Schmerzen",
            "wurde",
            "werden",
            "nicht",
            "über",
            "für",
            "Ärztin",
            "Gemeinderat",
            "Fußball",
            "Straßenbahn",
            "Rezept",
            "Nebenwirkungen",
            "Untersuchung",
            "Jahr",
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let mut t = String::with_capacity(chars + 32);
                while t.len() < chars {
                    if rng.random_bool(0.3) {
                        // an invented word: random syllables
                        let syl = [
                            "ver", "ge", "schaft", "ung", "lich", "keit", "bau", "stein", "wald",
                            "ter", "an", "ös",
                        ];
                        for _ in 0..rng.random_range(2..5) {
                            t.push_str(syl[rng.random_range(0..syl.len())]);
                        }
                    } else {
                        t.push_str(words[rng.random_range(0..words.len())]);
                    }
                    t.push(if rng.random_bool(0.07) { '.' } else { ' ' });
                    if t.ends_with('.') {
                        t.push(' ');
                    }
                }
                t
            })
            .collect()
    }

    /// CPU seconds (user + system) of this process or thread so far, from
    /// /proc (clock ticks of 1/100 s); None off Linux.
    fn cpu_seconds(which: &str) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
    }

    /// Throughput of the n-gram filter; run by scripts/bench_filter.sh in a
    /// release build (FLOW_BENCH_DOCS documents, default 40,000).
    #[test]
    #[ignore = "benchmark: run by scripts/bench_filter.sh"]
    fn bench_filter_throughput() {
        use super::super::train_classifier::NgramFeatures;
        use rand::{Rng, SeedableRng};
        let n: usize = std::env::var("FLOW_BENCH_DOCS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(40_000);
        let docs = synth_docs(n, 3000, 1);
        let avg_chars = docs.iter().map(|d| d.chars().count()).sum::<usize>() as f64 / n as f64;
        let features = NgramFeatures {
            buckets: 1 << 18,
            word_ngrams: 2,
            char_min: 3,
            char_max: 5,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let weights: Vec<f32> = (0..features.buckets)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let model = NgramModel {
            features: features.clone(),
            weights,
            bias: 0.0,
        };
        // 1. scoring alone, one thread
        let t = std::time::Instant::now();
        let cpu0 = cpu_seconds("thread-self");
        let mut kept = 0usize;
        let mut scores = Vec::with_capacity(n);
        for d in &docs {
            let score = model.score(d);
            kept += (score >= 0.5) as usize;
            scores.push(score);
        }
        let score_secs = t.elapsed().as_secs_f64();
        scores.sort_by(f32::total_cmp);
        let median = scores[n / 2];
        let score_cpu = cpu_seconds("thread-self").zip(cpu0).map(|(a, b)| a - b);
        // 2. the whole op (zstd shards in and out, JSON parsing, stats) on all threads
        let tmp = tempfile::tempdir().unwrap();
        let corpus = tmp.path().join("c");
        std::fs::create_dir_all(&corpus).unwrap();
        let shards = 8;
        for s in 0..shards {
            let mut w =
                super::super::corpus::ShardWriter::new(&corpus, &format!("tmp{s}"), u64::MAX);
            for (i, d) in docs.iter().enumerate().skip(s).step_by(shards) {
                w.write_json(&serde_json::json!({"id": format!("d{i}"), "text": d, "url": "https://example.org/x"})).unwrap();
            }
            for (name, _) in w.finish().unwrap() {
                std::fs::rename(
                    corpus.join(&name),
                    corpus.join(format!("docs-{s:05}.jsonl.zst")),
                )
                .unwrap();
            }
        }
        let clf = tmp.path().join("clf");
        std::fs::create_dir_all(&clf).unwrap();
        let bytes: Vec<u8> = model.weights.iter().flat_map(|w| w.to_le_bytes()).collect();
        std::fs::write(clf.join("weights.f32"), bytes).unwrap();
        let info = serde_json::json!({"method": "ngram", "positive": "x", "threshold": 0.5, "features": features, "bias": 0.0, "weights_file": "weights.f32",
            "train_documents": 0, "valid_documents": 0, "valid_positive": 0, "threshold_rule": "bench", "valid": super::super::agreement::Prf::default(),
            "valid_at_half": super::super::agreement::Prf::default(), "epochs": 0, "seed": 0});
        std::fs::write(clf.join("classifier.json"), info.to_string()).unwrap();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        // (seconds, CPU seconds) of the whole op; `threshold` None: the
        // classifier's (0.5, which keeps almost nothing of these documents,
        // so writing costs nothing), else that threshold
        let run = |threshold: Option<f32>, out: &str| {
            let mut params = vec![
                ("corpus", Value::Path(corpus.clone())),
                ("classifier", Value::Path(clf.clone())),
            ];
            params.extend(threshold.map(|t| ("threshold", Value::Float(t as f64))));
            let t = std::time::Instant::now();
            let cpu0 = cpu_seconds("self");
            pool.install(|| run_op(&Filter, &params, &tmp.path().join(out)))
                .unwrap();
            let cpu = cpu_seconds("self").zip(cpu0).map(|(a, b)| a - b);
            (t.elapsed().as_secs_f64(), cpu)
        };
        let (op_secs, op_cpu) = run(None, "o");
        // the median score as threshold: half the documents are written
        let (half_secs, half_cpu) = run(Some(median), "o-half");
        let per_cpu_s = |cpu: Option<f64>| {
            cpu.map(|c| format!("{:.0}", n as f64 / c.max(1e-9)))
                .unwrap_or("n/a".into())
        };
        println!("BENCH documents={n} avg_chars={avg_chars:.0} kept={kept}");
        // wall-clock rates suffer when other processes share the cores; docs per
        // CPU-second is the per-core rate regardless
        println!(
            "BENCH score_only_1_thread wall_docs_per_s={:.0} docs_per_cpu_s={}",
            n as f64 / score_secs,
            per_cpu_s(score_cpu)
        );
        for (name, secs, cpu) in [
            ("filter_op", op_secs, op_cpu),
            ("filter_op_keep_half", half_secs, half_cpu),
        ] {
            println!(
                "BENCH {name} threads={threads} wall_docs_per_s={:.0} wall_docs_per_s_per_core={:.0} docs_per_cpu_s={}",
                n as f64 / secs,
                n as f64 / secs / threads as f64,
                per_cpu_s(cpu)
            );
        }
    }

    /// Throughput of the filter with an encoder classifier beside the n-gram
    /// one on the same documents; run by scripts/bench_encoder.sh in a
    /// release build. FLOW_BENCH_ENCODER: a train_classifier encoder
    /// artifact; FLOW_BENCH_DOCS documents (default 256) of ~3,000
    /// characters; FLOW_BENCH_OUT: where docs.jsonl is written for the
    /// transformers side.
    #[test]
    #[ignore = "benchmark: run by scripts/bench_encoder.sh"]
    fn bench_encoder_filter_throughput() {
        let clf = std::path::PathBuf::from(
            std::env::var("FLOW_BENCH_ENCODER").expect("FLOW_BENCH_ENCODER"),
        );
        let n: usize = std::env::var("FLOW_BENCH_DOCS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256);
        let docs = synth_docs(n, 3000, 1);
        let tmp = tempfile::tempdir().unwrap();
        let corpus = tmp.path().join("c");
        std::fs::create_dir_all(&corpus).unwrap();
        let mut w = super::super::corpus::ShardWriter::new(&corpus, "tmp0", u64::MAX);
        let mut lines = String::new();
        for (i, d) in docs.iter().enumerate() {
            let rec = serde_json::json!({"id": format!("d{i}"), "text": d});
            w.write_json(&rec).unwrap();
            lines.push_str(&rec.to_string());
            lines.push('\n');
        }
        for (name, _) in w.finish().unwrap() {
            std::fs::rename(corpus.join(&name), corpus.join("docs-00000.jsonl.zst")).unwrap();
        }
        if let Ok(out) = std::env::var("FLOW_BENCH_OUT") {
            std::fs::write(std::path::Path::new(&out).join("docs.jsonl"), lines).unwrap();
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (info, _) = load_any_classifier(&clf).unwrap();
        let out = tmp.path().join("o");
        let t = std::time::Instant::now();
        let cpu0 = cpu_seconds("self");
        pool.install(|| {
            run_op(
                &Filter,
                &[
                    ("corpus", Value::Path(corpus.clone())),
                    ("classifier", Value::Path(clf.clone())),
                ],
                &out,
            )
        })
        .unwrap();
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds("self").zip(cpu0).map(|(a, b)| a - b);
        println!(
            "BENCH encoder_filter_op threads={threads} documents={n} max_len={:?} wall_docs_per_s={:.1} docs_per_cpu_s={}",
            info.max_tokens,
            n as f64 / secs,
            cpu.map(|c| format!("{:.1}", n as f64 / c.max(1e-9))).unwrap_or("n/a".into())
        );
    }
}
