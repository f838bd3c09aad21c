//! `pack`: tokenises a corpus with a model's tokenizer and packs it into
//! fixed-length sequences for training, in the packed-token format the train
//! op reads (see docs/ops-data.md):
//!
//! - `tokens.bin`: u32 LE, sequences × seq_len token ids;
//! - `doc_ids.bin`: u32 LE, same shape: per token the index of its document
//!   within its sequence (0, 1, ...), `u32::MAX` on padding (last sequence
//!   only);
//! - `pack.json`: seq_len, sequences, tokens (non-padding), documents,
//!   eos_id, pad_id, tokenizer_hash (blake3 hex of tokenizer.json).
//!
//! Each document is tokenised without special tokens and gets one EOS; the
//! stream is cut every seq_len tokens, and a document cut in two continues in
//! the next sequence under a new index (0).
//!
//! Sharded (`Op::sharding`): a piece is an input shard; shard tasks
//! tokenise (the expensive part) and the merge packs their token streams
//! in corpus order, so the bytes do not depend on how the shards were cut
//! into tasks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use rayon::prelude::*;
use serde::Deserialize;

use crate::artifacts::data::PackInfo;
use crate::artifacts::JsonFile;

use super::corpus::{
    corpus_shards, for_each_line, on_error_param, parse_doc, read_json_file, write_json_atomic,
    ErrorLog, OnError,
};
use crate::op::{
    run_in_parts, Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, ParamsShape, Resources,
    Sharded, Type, Value,
};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Pack)]
}

/// Documents tokenised together by the parallel workers.
const CHUNK: usize = 1024;

/// The tokenizer.json of a model directory (or the file itself).
fn tokenizer_file(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("tokenizer.json")
    } else {
        p.to_path_buf()
    }
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The EOS id: the `eos_token` parameter, else tokenizer_config.json's
/// `eos_token`, else generation_config.json's / config.json's `eos_token_id`
/// (the first if a list).
fn find_eos(tok: &tokenizers::Tokenizer, dir: &Path, explicit: &str) -> OpResult<u32> {
    let by_name = |name: &str| {
        tok.token_to_id(name)
            .ok_or_else(|| miette!("the tokenizer has no token {name:?} (eos_token)"))
    };
    if !explicit.is_empty() {
        return by_name(explicit);
    }
    if let Some(cfg) = read_json(&dir.join("tokenizer_config.json")) {
        match &cfg["eos_token"] {
            serde_json::Value::String(s) => return by_name(s),
            serde_json::Value::Object(o) => {
                if let Some(s) = o.get("content").and_then(|c| c.as_str()) {
                    return by_name(s);
                }
            }
            _ => {}
        }
    }
    for f in ["generation_config.json", "config.json"] {
        if let Some(cfg) = read_json(&dir.join(f)) {
            let v = &cfg["eos_token_id"];
            if let Some(id) = v.as_u64().or_else(|| {
                v.as_array()
                    .and_then(|a| a.first())
                    .and_then(|x| x.as_u64())
            }) {
                return Ok(id as u32);
            }
        }
    }
    Err(miette!(
        help = "pass eos_token: \"<|endoftext|>\" (or the model's EOS token)",
        "cannot find the EOS token in {} (tokenizer_config.json eos_token, generation_config.json / config.json eos_token_id)",
        dir.display()
    ))
}

/// Streams packed sequences to tokens.bin and doc_ids.bin.
pub struct Packer {
    seq_len: usize,
    tokens: BufWriter<File>,
    doc_ids: BufWriter<File>,
    cur_tokens: Vec<u32>,
    cur_docs: Vec<u32>,
    /// Index of the next document in the current sequence.
    next_doc: u32,
    pub sequences: u64,
    pub real_tokens: u64,
    pub documents: u64,
}

impl Packer {
    pub fn new(dir: &Path, seq_len: usize) -> OpResult<Packer> {
        let open = |n: &str| -> OpResult<BufWriter<File>> {
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(dir.join(n))
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot create {n}"))?,
            ))
        };
        Ok(Packer {
            seq_len,
            tokens: open(".tokens.bin.tmp")?,
            doc_ids: open(".doc_ids.bin.tmp")?,
            cur_tokens: Vec::with_capacity(seq_len),
            cur_docs: Vec::with_capacity(seq_len),
            next_doc: 0,
            sequences: 0,
            real_tokens: 0,
            documents: 0,
        })
    }

    fn emit(&mut self) -> OpResult<()> {
        for (t, d) in self.cur_tokens.iter().zip(&self.cur_docs) {
            self.tokens.write_all(&t.to_le_bytes()).into_diagnostic()?;
            self.doc_ids.write_all(&d.to_le_bytes()).into_diagnostic()?;
        }
        self.cur_tokens.clear();
        self.cur_docs.clear();
        self.next_doc = 0;
        self.sequences += 1;
        Ok(())
    }

    /// Appends a document's tokens (its EOS included).
    pub fn push(&mut self, doc: &[u32]) -> OpResult<()> {
        self.documents += 1;
        self.real_tokens += doc.len() as u64;
        let mut rest = doc;
        while !rest.is_empty() {
            let room = self.seq_len - self.cur_tokens.len();
            let take = room.min(rest.len());
            self.cur_tokens.extend_from_slice(&rest[..take]);
            self.cur_docs
                .extend(std::iter::repeat_n(self.next_doc, take));
            self.next_doc += 1;
            rest = &rest[take..];
            if self.cur_tokens.len() == self.seq_len {
                self.emit()?;
            }
        }
        Ok(())
    }

    /// Pads and writes the last sequence (or drops it), and renames the
    /// files. Returns (sequences, non-padding tokens written, tokens dropped).
    pub fn finish(mut self, dir: &Path, pad_id: u32, drop_last: bool) -> OpResult<(u64, u64, u64)> {
        let mut dropped = 0;
        if !self.cur_tokens.is_empty() {
            if drop_last {
                dropped = self.cur_tokens.len() as u64;
                self.real_tokens -= dropped;
            } else {
                let pad = self.seq_len - self.cur_tokens.len();
                self.cur_tokens.extend(std::iter::repeat_n(pad_id, pad));
                self.cur_docs.extend(std::iter::repeat_n(u32::MAX, pad));
                self.emit()?;
            }
        }
        self.tokens.flush().into_diagnostic()?;
        self.doc_ids.flush().into_diagnostic()?;
        drop(self.tokens);
        drop(self.doc_ids);
        std::fs::rename(dir.join(".tokens.bin.tmp"), dir.join("tokens.bin")).into_diagnostic()?;
        std::fs::rename(dir.join(".doc_ids.bin.tmp"), dir.join("doc_ids.bin")).into_diagnostic()?;
        Ok((self.sequences, self.real_tokens, dropped))
    }
}

/// The `pack` op.
pub struct Pack;

impl Op for Pack {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "pack",
            version: 3,
            doc: "Tokenises a corpus with a model's tokenizer (in parallel), appends EOS to each document and packs the stream into seq_len sequences: tokens.bin, doc_ids.bin (u32 LE) and pack.json, the format the train op reads.",
            params: vec![
                Param::required("corpus", Type::Dir, "corpus artifact"),
                Param::required("tokenizer", Type::Either(Box::new(Type::Model), Box::new(Type::File)), "a model directory (its tokenizer.json) or a tokenizer.json file"),
                Param::required("seq_len", Type::Int, "tokens per sequence").within(2.0, (1u32 << 24) as f64),
                Param::optional("eos_token", Type::Str, Value::Str(String::new()), "EOS token text; empty: from tokenizer_config.json / generation_config.json / config.json"),
                Param::optional("pad_token", Type::Str, Value::Str(String::new()), "padding token text; empty: the EOS id (padding is masked by doc_ids anyway)"),
                Param::optional("drop_last", Type::Bool, Value::Bool(false), "drop the last, incomplete sequence instead of padding it"),
                on_error_param(),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "info", ty: Type::File, doc: "pack.json" }],
            resources: Resources::ALL_THREADS,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<PackParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        run_in_parts(self, ctx, None)
    }

    fn sharding(&self) -> Option<&dyn Sharded> {
        Some(self)
    }
}

/// `pack`'s params (see its spec).
#[derive(Deserialize)]
struct PackParams {
    corpus: PathBuf,
    tokenizer: PathBuf,
    seq_len: usize,
    eos_token: String,
    pad_token: String,
    drop_last: bool,
    on_error: OnError,
}

/// What every shard task and the merge of one run need: the tokenizer and
/// its special ids.
struct PackSetup {
    params: PackParams,
    seq_len: usize,
    tokenizer: tokenizers::Tokenizer,
    tok_bytes: Vec<u8>,
    eos_id: u32,
    pad_id: u32,
}

impl PackSetup {
    fn of(ctx: &OpContext) -> OpResult<PackSetup> {
        let params: PackParams = ctx.params()?;
        let tok_arg = params.tokenizer.clone();
        let tok_file = tokenizer_file(&tok_arg);
        let tok_bytes = std::fs::read(&tok_file)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read {}", tok_file.display()))?;
        let tokenizer = tokenizers::Tokenizer::from_bytes(&tok_bytes)
            .map_err(|e| miette!("{}: not a tokenizer.json: {e}", tok_file.display()))?;
        let model_dir = tok_file.parent().map(Path::to_path_buf).unwrap_or_default();
        let eos_id = find_eos(&tokenizer, &model_dir, &params.eos_token)?;
        let pad_name = params.pad_token.as_str();
        let pad_id = if pad_name.is_empty() {
            eos_id
        } else {
            tokenizer
                .token_to_id(pad_name)
                .ok_or_else(|| miette!("the tokenizer has no token {pad_name:?} (pad_token)"))?
        };
        Ok(PackSetup {
            seq_len: params.seq_len,
            params,
            tokenizer,
            tok_bytes,
            eos_id,
            pad_id,
        })
    }
}

/// Tokenises the documents of `shards` in corpus order, in parallel
/// chunks; calls `each` with every document's ids (its EOS appended).
fn tokenise_shards(
    ctx: &OpContext,
    setup: &PackSetup,
    shards: &[PathBuf],
    errors: &mut ErrorLog,
    mut each: impl FnMut(&[u32]) -> OpResult<()>,
) -> OpResult<()> {
    let policy = setup.params.on_error;
    let mut pending: Vec<(PathBuf, u64, String)> = Vec::with_capacity(CHUNK);
    let mut flush =
        |pending: &mut Vec<(PathBuf, u64, String)>, errors: &mut ErrorLog| -> OpResult<()> {
            ctx.check_cancelled()?;
            let encoded: Vec<Result<Vec<u32>, String>> = pending
                .par_iter()
                .map(|(shard, n, line)| {
                    let doc = parse_doc(shard, *n, line).map_err(|e| e.to_string())?;
                    let enc = setup
                        .tokenizer
                        .encode(doc.text.as_ref(), false)
                        .map_err(|e| {
                            format!(
                                "{}:{n}: doc {}: tokenizer failed: {e}",
                                shard.display(),
                                doc.id
                            )
                        })?;
                    let mut ids = enc.get_ids().to_vec();
                    ids.push(setup.eos_id);
                    Ok(ids)
                })
                .collect();
            for r in encoded {
                match r {
                    Ok(ids) => each(&ids)?,
                    Err(e) => {
                        let (place, what) = e.split_once(": ").unwrap_or(("?", e.as_str()));
                        policy.record(errors, place, what)?;
                    }
                }
            }
            pending.clear();
            Ok(())
        };
    for shard in shards {
        for_each_line(shard, |n, line| {
            if !line.is_empty() {
                pending.push((shard.clone(), n, line.to_string()));
                if pending.len() >= CHUNK {
                    flush(&mut pending, errors)?;
                }
            }
            Ok(())
        })?;
        ctx.progress.inc(1);
    }
    flush(&mut pending, errors)
}

/// A shard task's part: `tokens.bin` (every document's ids, EOS included,
/// u32 LE, one after the other), `lengths.bin` (u32 LE: each document's
/// token count) and `part.json` (its bad records). Packing itself is a
/// cheap sequential pass the merge makes over the parts in order.
impl Sharded for Pack {
    fn pieces(&self, ctx: &OpContext) -> OpResult<usize> {
        let params: PackParams = ctx.params()?;
        Ok(corpus_shards(&params.corpus)?.len())
    }

    fn run_part(&self, ctx: &OpContext, range: Range<usize>) -> OpResult<()> {
        let setup = PackSetup::of(ctx)?;
        let shards = corpus_shards(&setup.params.corpus)?;
        let create = |name: &str| -> OpResult<BufWriter<File>> {
            let path = ctx.out_dir.join(name);
            Ok(BufWriter::with_capacity(
                1 << 20,
                File::create(&path)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot create {}", path.display()))?,
            ))
        };
        let (mut tokens, mut lengths) = (create("tokens.bin")?, create("lengths.bin")?);
        let mut errors = ErrorLog::default();
        tokenise_shards(ctx, &setup, &shards[range], &mut errors, |ids| {
            let len = u32::try_from(ids.len())
                .map_err(|_| miette!("a document of {} tokens is too long", ids.len()))?;
            lengths.write_all(&len.to_le_bytes()).into_diagnostic()?;
            for t in ids {
                tokens.write_all(&t.to_le_bytes()).into_diagnostic()?;
            }
            Ok(())
        })?;
        tokens.flush().into_diagnostic()?;
        lengths.flush().into_diagnostic()?;
        write_json_atomic(&ctx.out_dir.join("part.json"), &errors)
    }

    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs> {
        let setup = PackSetup::of(ctx)?;
        let seq_len = setup.seq_len;
        let mut packer = Packer::new(&ctx.out_dir, seq_len)?;
        let mut errors = ErrorLog::default();
        let mut ids: Vec<u32> = Vec::new();
        for part in parts {
            let open = |name: &str| -> OpResult<std::io::BufReader<File>> {
                let path = part.join(name);
                Ok(std::io::BufReader::with_capacity(
                    1 << 20,
                    File::open(&path)
                        .into_diagnostic()
                        .wrap_err_with(|| format!("cannot open {}", path.display()))?,
                ))
            };
            let corrupt = || miette!("{} is truncated or corrupt", part.display());
            let lengths = std::fs::read(part.join("lengths.bin"))
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot read {}", part.join("lengths.bin").display()))?;
            let mut tokens = open("tokens.bin")?;
            let mut buf: Vec<u8> = Vec::new();
            for len in lengths.chunks_exact(4) {
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                buf.resize(4 * len, 0);
                std::io::Read::read_exact(&mut tokens, &mut buf).map_err(|_| corrupt())?;
                ids.clear();
                ids.extend(
                    buf.chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                packer.push(&ids)?;
            }
            errors.merge(read_json_file(&part.join("part.json"))?);
        }
        super::corpus::name_error_places(&mut errors, ctx);
        let documents = packer.documents;
        let (seqs, tokens, dropped_tokens) =
            packer.finish(&ctx.out_dir, setup.pad_id, setup.params.drop_last)?;
        if seqs == 0 {
            return Err(miette!(
                "no complete sequence: {tokens} tokens with seq_len {seq_len} and drop_last"
            ));
        }
        let info = PackInfo {
            seq_len,
            sequences: seqs,
            tokens,
            documents,
            eos_id: setup.eos_id,
            pad_id: setup.pad_id,
            tokenizer_hash: blake3::hash(&setup.tok_bytes).to_hex().to_string(),
            dropped_tokens,
            errors,
        };
        info.write(&ctx.out_dir)?;
        ctx.log(&format!(
            "{documents} documents, {tokens} tokens in {seqs} sequences of {seq_len}"
        ));
        Ok(BTreeMap::from([(
            "info".to_string(),
            Value::Path("pack.json".into()),
        )]))
    }
}

#[cfg(test)]
mod tests {
    use super::super::corpus::testutil::*;
    use super::super::corpus::Corpus;
    use super::*;

    /// A word-level tokenizer.json (whitespace split) over the given words;
    /// id 0 is `</s>`, 1 is `<unk>`.
    fn write_tokenizer(dir: &Path, words: &[&str]) {
        let mut vocab = serde_json::Map::new();
        vocab.insert("</s>".into(), 0.into());
        vocab.insert("<unk>".into(), 1.into());
        for (i, w) in words.iter().enumerate() {
            vocab.insert(w.to_string(), (i + 2).into());
        }
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 0, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"eos_token": "</s>"}"#,
        )
        .unwrap();
    }

    fn read_u32(p: &Path) -> Vec<u32> {
        std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn pack_follows_the_packed_format() {
        let tmp = tempfile::tempdir().unwrap();
        let words = ["a", "b", "c", "d", "e", "f", "g"];
        let model = tmp.path().join("model");
        write_tokenizer(&model, &words);
        // many small documents (several parallel chunks), one long, one unknown word
        let mut texts: Vec<String> = (0..2500).map(|i| words[..(i % 5) + 1].join(" ")).collect();
        texts.insert(7, "a b c d e f g a b c d e f g a b c".into());
        texts.insert(9, "a zzz b".into());
        let jsonl: String = texts
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"id": format!("d{i}"), "text": t}).to_string() + "\n")
            .collect();
        std::fs::write(tmp.path().join("in.jsonl"), jsonl).unwrap();
        let corpus = tmp.path().join("c");
        run_op(
            &Corpus,
            &[("input", Value::Path(tmp.path().join("in.jsonl")))],
            &corpus,
        )
        .unwrap();
        let out = tmp.path().join("p");
        let seq_len = 8usize;
        run_op(
            &Pack,
            &[
                ("corpus", Value::Path(corpus)),
                ("tokenizer", Value::Path(model.clone())),
                ("seq_len", Value::Int(seq_len as i64)),
            ],
            &out,
        )
        .unwrap();

        // the reference: the format's rules applied to whitespace-split ids
        let id = |w: &str| {
            words
                .iter()
                .position(|x| *x == w)
                .map(|p| p as u32 + 2)
                .unwrap_or(1)
        };
        let mut stream: Vec<(u32, usize)> = Vec::new();
        for (d, t) in texts.iter().enumerate() {
            stream.extend(t.split_whitespace().map(|w| (id(w), d)));
            stream.push((0, d));
        }
        let tokens = read_u32(&out.join("tokens.bin"));
        let doc_ids = read_u32(&out.join("doc_ids.bin"));
        let seqs = stream.len().div_ceil(seq_len);
        assert_eq!(tokens.len(), seqs * seq_len);
        assert_eq!(doc_ids.len(), tokens.len());
        for (s, chunk) in stream.chunks(seq_len).enumerate() {
            let first_doc = chunk[0].1;
            for (k, &(t, d)) in chunk.iter().enumerate() {
                assert_eq!(tokens[s * seq_len + k], t, "seq {s} pos {k}");
                // index within the sequence: documents numbered from 0 at the sequence start
                let distinct_before = chunk[..=k]
                    .iter()
                    .map(|x| x.1)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len() as u32
                    - 1;
                assert_eq!(doc_ids[s * seq_len + k], distinct_before, "seq {s} pos {k}");
                assert!(d >= first_doc);
            }
            for k in chunk.len()..seq_len {
                assert_eq!(doc_ids[s * seq_len + k], u32::MAX);
                assert_eq!(tokens[s * seq_len + k], 0);
            }
        }
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("pack.json")).unwrap()).unwrap();
        assert_eq!(info["seq_len"], seq_len as u64);
        assert_eq!(info["sequences"], seqs as u64);
        assert_eq!(info["tokens"], stream.len() as u64);
        assert_eq!(info["documents"], texts.len() as u64);
        assert_eq!(info["eos_id"], 0);
        assert_eq!(info["pad_id"], 0);
        let hash = blake3::hash(&std::fs::read(model.join("tokenizer.json")).unwrap())
            .to_hex()
            .to_string();
        assert_eq!(info["tokenizer_hash"], hash);
    }

    #[test]
    fn pack_drop_last_and_missing_eos() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        write_tokenizer(&model, &["x"]);
        let corpus = demo_corpus(&tmp.path().join("c"));
        let out = tmp.path().join("p");
        run_op(
            &Pack,
            &[
                ("corpus", Value::Path(corpus.clone())),
                ("tokenizer", Value::Path(model.join("tokenizer.json"))),
                ("seq_len", Value::Int(64)),
                ("drop_last", Value::Bool(true)),
            ],
            &out,
        )
        .unwrap();
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("pack.json")).unwrap()).unwrap();
        let docs = read_corpus(&corpus);
        let total: u64 = docs
            .iter()
            .map(|d| d["text"].as_str().unwrap().split_whitespace().count() as u64 + 1)
            .sum();
        assert_eq!(
            info["tokens"].as_u64().unwrap() + info["dropped_tokens"].as_u64().unwrap(),
            total
        );
        assert_eq!(info["sequences"].as_u64().unwrap(), total / 64);
        assert!(!read_u32(&out.join("doc_ids.bin")).contains(&u32::MAX));
        std::fs::remove_file(model.join("tokenizer_config.json")).unwrap();
        let err = run_op(
            &Pack,
            &[
                ("corpus", Value::Path(corpus)),
                ("tokenizer", Value::Path(model)),
                ("seq_len", Value::Int(64)),
            ],
            &tmp.path().join("q"),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("eos_token"), "{err:?}");
    }

    /// A corpus of `n` documents over the words `a`..`g` in shards of
    /// `per_shard`, and a tokenizer over those words.
    fn sharded_corpus(dir: &Path, n: usize, per_shard: i64) -> (PathBuf, PathBuf) {
        let words = ["a", "b", "c", "d", "e", "f", "g"];
        let model = dir.join("model");
        write_tokenizer(&model, &words);
        let jsonl: String = (0..n)
            .map(|i| {
                let text = words[..(i * 7 % 5) + 1].join(" ");
                serde_json::json!({"id": format!("d{i}"), "text": text}).to_string() + "\n"
            })
            .collect();
        std::fs::write(dir.join("in.jsonl"), jsonl).unwrap();
        let corpus = dir.join("c");
        run_op(
            &Corpus,
            &[
                ("input", Value::Path(dir.join("in.jsonl"))),
                ("docs_per_shard", Value::Int(per_shard)),
            ],
            &corpus,
        )
        .unwrap();
        (corpus, model)
    }

    #[test]
    fn pack_writes_the_same_bytes_for_any_number_of_shard_tasks() {
        let tmp = tempfile::tempdir().unwrap();
        // 7 shards of 150 documents (the last shorter); sequences of 13
        // tokens cross the shard boundaries
        let (corpus, model) = sharded_corpus(tmp.path(), 1000, 150);
        assert_eq!(corpus_shards(&corpus).unwrap().len(), 7);
        let params = [
            ("corpus", Value::Path(corpus.clone())),
            ("tokenizer", Value::Path(model)),
            ("seq_len", Value::Int(13)),
        ];
        let out = assert_same_bytes_for_task_counts(
            &Pack,
            &params,
            &tmp.path().join("p"),
            &[2, 3, 7, 64],
        );
        // the one-task stream is the documents' words (ids 2..) and an EOS
        // (0) each, in corpus order, cut every 13 tokens
        let mut stream: Vec<u32> = Vec::new();
        for d in read_corpus(&corpus) {
            for w in d["text"].as_str().unwrap().split_whitespace() {
                stream.push(w.as_bytes()[0] as u32 - b'a' as u32 + 2);
            }
            stream.push(0);
        }
        let tokens = read_u32(&out.join("tokens.bin"));
        assert_eq!(&tokens[..stream.len()], &stream[..]);
        assert_eq!(tokens.len(), stream.len().div_ceil(13) * 13);
    }

    #[test]
    fn a_failing_shard_task_fails_pack_with_its_shard_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let model = tmp.path().join("model");
        write_tokenizer(&model, &["a", "b"]);
        let bad = write_corpus_shards(
            &tmp.path().join("bad"),
            &[
                "{\"id\":\"x\",\"text\":\"a b\"}\n",
                "{\"id\":\"y\",\"text\":\"b\"}\n",
                "{\"id\":\"z\",\"text\":\"a\"}\n{\"id\":\"w\"}\n",
            ],
        );
        let out = tmp.path().join("o");
        let err = run_sharded(
            &Pack,
            &[
                ("corpus", Value::Path(bad)),
                ("tokenizer", Value::Path(model)),
                ("seq_len", Value::Int(4)),
                ("on_error", Value::Str("fail".into())),
            ],
            &out,
            3,
        )
        .unwrap_err();
        assert_third_shard_task_failed(&err, "docs-00002.jsonl.zst:2", &out, "pack.json");
    }
}
