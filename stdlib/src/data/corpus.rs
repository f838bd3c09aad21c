//! `corpus`: reads FineWeb-2 parquet shards and JSONL files (plain, `.gz`,
//! `.zst`) into flow's normalised corpus artifact.
//!
//! The artifact (every data op reads and most write it) is a directory of
//! zstd-compressed JSONL shards `docs-00000.jsonl.zst`, one JSON object a
//! line with at least `id` and `text` (all other source fields kept), plus a
//! JSON statistics file. This file also holds the shared reading and writing
//! helpers the other data ops use.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use crate::op::{Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value};

pub fn ops() -> Vec<Arc<dyn Op>> {
    vec![Arc::new(Corpus)]
}

// ---------------------------------------------------------------------------
// Shared helpers for the data ops.

/// What an op does with a bad record (malformed line, missing field, failed
/// request): `Fail` stops with an error naming the place, `Skip` counts it,
/// keeps the first examples for the statistics file and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Skip,
    Fail,
}

impl OnError {
    /// Reads the `on_error` parameter.
    pub fn from_ctx(ctx: &OpContext) -> OpResult<OnError> {
        match ctx.str("on_error")? {
            "skip" => Ok(OnError::Skip),
            "fail" => Ok(OnError::Fail),
            other => Err(miette!(
                "parameter `on_error`: expected \"skip\" or \"fail\", got {other:?}"
            )),
        }
    }
}

/// The `on_error` parameter every data op takes.
pub fn on_error_param() -> Param {
    Param::optional(
        "on_error",
        Type::Enum(vec!["skip".into(), "fail".into()]),
        Value::Str("skip".into()),
        "what to do with a bad record: \"skip\" counts and reports it, \"fail\" stops the run",
    )
}

/// Bad records seen so far: a count and the first few, each with its place.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ErrorLog {
    pub count: u64,
    /// The first [`ErrorLog::KEEP`] problems, as "place: what".
    pub examples: Vec<String>,
}

impl ErrorLog {
    pub const KEEP: usize = 50;

    /// Records a bad record at `place` (file:line or document id), or fails
    /// with it under [`OnError::Fail`].
    pub fn record(&mut self, policy: OnError, place: &str, what: &str) -> OpResult<()> {
        if policy == OnError::Fail {
            return Err(miette!("{place}: {what}")).wrap_err(
                "bad input (on_error: \"fail\"; use on_error: \"skip\" to count and skip it)",
            );
        }
        self.count += 1;
        if self.examples.len() < Self::KEEP {
            self.examples.push(format!("{place}: {what}"));
        }
        Ok(())
    }

    pub fn merge(&mut self, other: ErrorLog) {
        self.count += other.count;
        for e in other.examples {
            if self.examples.len() < Self::KEEP {
                self.examples.push(e);
            }
        }
    }
}

/// Opens a file and undoes its compression by extension (`.gz`, `.zst`).
pub fn open_decompressed(path: &Path) -> OpResult<Box<dyn BufRead + Send>> {
    let file = File::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(if name.ends_with(".gz") {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        ))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        let dec = zstd::stream::read::Decoder::new(file)
            .into_diagnostic()
            .wrap_err_with(|| format!("{}: not a zstd stream", path.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, dec))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    })
}

/// Calls `f(line_number, line)` for every line of a (possibly compressed)
/// text file; line numbers start at 1. A read or UTF-8 error names the line.
pub fn for_each_line(path: &Path, f: impl FnMut(u64, &str) -> OpResult<()>) -> OpResult<()> {
    match read_lines(path, f)? {
        None => Ok(()),
        Some(broken) => Err(miette!("{broken}")),
    }
}

/// Like [`for_each_line`], but a stream that breaks off (a truncated `.gz`
/// or `.zst`, a read error) ends the reading with the lines read so far
/// delivered and `Some(what happened)` returned. A UTF-8 byte-order mark
/// before the first line is not part of it.
pub fn read_lines(
    path: &Path,
    mut f: impl FnMut(u64, &str) -> OpResult<()>,
) -> OpResult<Option<String>> {
    let mut reader = open_decompressed(path)?;
    let mut buf = Vec::with_capacity(1 << 14);
    let mut line_no = 0u64;
    loop {
        buf.clear();
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                return Ok(Some(format!(
                    "{}:{}: the file breaks off after {line_no} complete lines (truncated or corrupt): {e}",
                    path.display(),
                    line_no + 1
                )))
            }
        };
        if n == 0 {
            return Ok(None);
        }
        line_no += 1;
        while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            buf.pop();
        }
        let line = if line_no == 1 {
            buf.strip_prefix("\u{feff}".as_bytes()).unwrap_or(&buf)
        } else {
            &buf[..]
        };
        match std::str::from_utf8(line) {
            Ok(line) => f(line_no, line)?,
            Err(e) => f(line_no, &format!("\u{0}invalid UTF-8: {e}"))?,
        }
    }
}

/// The shards of a corpus artifact directory, in name order.
pub fn corpus_shards(dir: &Path) -> OpResult<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read corpus directory {}", dir.display()))?;
    let mut shards: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("docs-") && n.ends_with(".jsonl.zst"))
        })
        .collect();
    shards.sort();
    if shards.is_empty() {
        return Err(miette!(
            help = "pass the output of `corpus` (or of an op that writes a corpus: sample, filter, dedup)",
            "{} holds no corpus shards (docs-*.jsonl.zst)",
            dir.display()
        ));
    }
    Ok(shards)
}

/// A document of a corpus artifact, borrowing from its JSON line.
#[derive(Deserialize)]
pub struct DocRef<'a> {
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    pub text: std::borrow::Cow<'a, str>,
}

/// Parses a corpus line (`{"id": .., "text": .., ...}`); the error names the
/// shard and line.
pub fn parse_doc<'a>(shard: &Path, line_no: u64, line: &'a str) -> OpResult<DocRef<'a>> {
    serde_json::from_str(line).map_err(|e| {
        miette!(
            "{}:{line_no}: not a corpus record with `id` and `text`: {e}",
            shard.display()
        )
    })
}

/// Calls `f(doc, raw_line)` for each document of a corpus shard.
pub fn for_each_doc(
    shard: &Path,
    mut f: impl FnMut(DocRef<'_>, &str) -> OpResult<()>,
) -> OpResult<()> {
    for_each_line(shard, |n, line| {
        if line.is_empty() {
            return Ok(());
        }
        let doc = parse_doc(shard, n, line)?;
        f(doc, line)
    })
}

/// Writes corpus shards `docs-NNNNN.jsonl.zst`, starting a new one every
/// `per_shard` documents. Each shard is written under a temporary name and
/// renamed when complete.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    per_shard: u64,
    index: usize,
    in_current: u64,
    current: Option<(
        PathBuf,
        zstd::stream::write::Encoder<'static, BufWriter<File>>,
    )>,
    /// (file name, documents) of every finished shard.
    pub shards: Vec<(String, u64)>,
}

impl ShardWriter {
    /// A writer of shards named `{prefix}-NNNNN.jsonl.zst`; `prefix` "docs"
    /// gives a corpus; several writers with distinct prefixes may share a
    /// directory (per-input-shard outputs of a parallel op).
    pub fn new(dir: &Path, prefix: &str, per_shard: u64) -> ShardWriter {
        ShardWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            per_shard: per_shard.max(1),
            index: 0,
            in_current: 0,
            current: None,
            shards: Vec::new(),
        }
    }

    fn final_name(&self) -> String {
        format!("{}-{:05}.jsonl.zst", self.prefix, self.index)
    }

    /// Appends one JSON line (without the newline).
    pub fn write_line(&mut self, line: &str) -> OpResult<()> {
        if self.current.is_none() {
            let tmp = self.dir.join(format!(".{}.tmp", self.final_name()));
            let file = File::create(&tmp)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", tmp.display()))?;
            let enc = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, file), 3)
                .into_diagnostic()?;
            self.current = Some((tmp, enc));
        }
        if let Some((_, enc)) = self.current.as_mut() {
            enc.write_all(line.as_bytes()).into_diagnostic()?;
            enc.write_all(b"\n").into_diagnostic()?;
        }
        self.in_current += 1;
        if self.in_current >= self.per_shard {
            self.close_current()?;
        }
        Ok(())
    }

    /// Serialises and appends a JSON value.
    pub fn write_json(&mut self, doc: &Json) -> OpResult<()> {
        let line = serde_json::to_string(doc).into_diagnostic()?;
        self.write_line(&line)
    }

    fn close_current(&mut self) -> OpResult<()> {
        if let Some((tmp, enc)) = self.current.take() {
            let mut w = enc.finish().into_diagnostic()?;
            w.flush().into_diagnostic()?;
            let name = self.final_name();
            std::fs::rename(&tmp, self.dir.join(&name)).into_diagnostic()?;
            self.shards.push((name, self.in_current));
            self.index += 1;
            self.in_current = 0;
        }
        Ok(())
    }

    /// Closes the last shard; returns (file name, documents) of every shard.
    pub fn finish(mut self) -> OpResult<Vec<(String, u64)>> {
        self.close_current()?;
        Ok(self.shards)
    }
}

/// Writes `value` as pretty JSON to `path` through a temporary file.
pub fn write_json_atomic(path: &Path, value: &impl Serialize) -> OpResult<()> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(value).into_diagnostic()?;
    std::fs::write(&tmp, text + "\n")
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).into_diagnostic()
}

/// Writes bytes to `path` through a temporary file.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> OpResult<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).into_diagnostic()
}

/// A compiled `pattern` of the `input` parameter: without a `/` it is
/// matched against file names, with one against paths relative to the
/// directory. `*` and `?` stop at `/`, `**` crosses it, `{a,b}` alternates
/// (globset's rules, as in ripgrep).
pub struct InputPattern {
    glob: globset::GlobMatcher,
    on_paths: bool,
}

impl InputPattern {
    pub fn new(pattern: &str) -> OpResult<InputPattern> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                miette!(
                    help = "`*`, `**`, `?`, `[a-z]` and `{a,b}` are the glob's special characters",
                    "parameter `pattern`: {pattern:?} is not a valid glob: {e}"
                )
            })?
            .compile_matcher();
        Ok(InputPattern {
            glob,
            on_paths: pattern.contains('/'),
        })
    }

    /// Whether `rel` (a path relative to the searched directory) matches.
    pub fn matches(&self, rel: &Path) -> bool {
        if self.on_paths {
            self.glob.is_match(rel)
        } else {
            rel.file_name().is_some_and(|n| self.glob.is_match(n))
        }
    }
}

/// The files under `root` that match, hidden files left out, in name order.
fn walk(root: &Path, pattern: &InputPattern) -> OpResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read directory {}", root.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !entry.file_type().is_file() || hidden {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if pattern.matches(rel) {
            out.push(entry.path().to_path_buf());
        }
    }
    Ok(out)
}

/// Resolves the `input` parameter: a file, a list of files, or a directory
/// searched recursively for files matching `pattern`. Sorted, deduplicated.
pub fn resolve_inputs(input: &Value, pattern: &str) -> OpResult<Vec<PathBuf>> {
    let glob = InputPattern::new(pattern)?;
    let mut out = Vec::new();
    let mut add = |v: &Value| -> OpResult<()> {
        let path = match v {
            Value::Path(p) => p.clone(),
            Value::Str(s) => PathBuf::from(s),
            other => {
                return Err(miette!(
                    "parameter `input`: expected files or a directory, got a {}",
                    other.kind()
                ))
            }
        };
        if path.is_dir() {
            let found = walk(&path, &glob)?;
            if found.is_empty() {
                return Err(miette!(
                    help = "check `pattern` (matched against file names; with a `/`, against paths relative to the directory)",
                    "no file in {} matches pattern {pattern:?}",
                    path.display()
                ));
            }
            out.extend(found);
        } else if path.is_file() {
            out.push(path);
        } else {
            return Err(miette!("input {} does not exist", path.display()));
        }
        Ok(())
    };
    match input {
        Value::List(items) => {
            for item in items {
                add(item)?;
            }
        }
        single => add(single)?,
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(miette!("parameter `input`: no files given"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The op.

/// The `corpus` op.
pub struct Corpus;

#[derive(Serialize, Default)]
struct SourceStats {
    path: String,
    format: &'static str,
    bytes: u64,
    /// blake3 of the file's bytes, so the artifact says exactly what it read.
    blake3: String,
    documents: u64,
    empty_text: u64,
    duplicate_ids: u64,
    errors: u64,
    /// Documents known to be lost: the unreadable rest of a parquet row group.
    documents_lost: u64,
    /// A compressed or broken stream ended early: what was read is kept,
    /// and this says where it broke off.
    #[serde(skip_serializing_if = "Option::is_none")]
    broken_off: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Parquet,
}

fn detect_format(path: &Path, forced: &str) -> OpResult<Format> {
    match forced {
        "jsonl" => return Ok(Format::Jsonl),
        "parquet" => return Ok(Format::Parquet),
        _ => {}
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let stem = name
        .trim_end_matches(".gz")
        .trim_end_matches(".zst")
        .trim_end_matches(".zstd");
    if stem.ends_with(".parquet") {
        Ok(Format::Parquet)
    } else if stem.ends_with(".jsonl") || stem.ends_with(".json") || stem.ends_with(".ndjson") {
        Ok(Format::Jsonl)
    } else {
        Err(miette!(
            help = "name shards *.parquet or *.jsonl[.gz|.zst], or set format: \"jsonl\" / \"parquet\"",
            "{}: cannot tell the format from the file name",
            path.display()
        ))
    }
}

fn hash_file(path: &Path) -> OpResult<(u64, String)> {
    let mut hasher = blake3::Hasher::new();
    let mut file = File::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).into_diagnostic()?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((bytes, hasher.finalize().to_hex().to_string()))
}

struct Normaliser<'a> {
    text_field: &'a str,
    id_field: &'a str,
    min_chars: usize,
    policy: OnError,
    seen_ids: HashSet<String>,
    writer: ShardWriter,
    errors: ErrorLog,
    chars: u64,
}

impl Normaliser<'_> {
    /// Turns a source record into a corpus record and writes it.
    fn take(
        &mut self,
        place: &str,
        fallback_id: String,
        mut obj: Map<String, Json>,
        stats: &mut SourceStats,
    ) -> OpResult<()> {
        let text = match obj.remove(self.text_field) {
            Some(Json::String(s)) => s,
            Some(Json::Null) | None => {
                stats.errors += 1;
                return self.errors.record(
                    self.policy,
                    place,
                    &format!("no `{}` field", self.text_field),
                );
            }
            Some(other) => {
                stats.errors += 1;
                return self.errors.record(
                    self.policy,
                    place,
                    &format!(
                        "`{}` is not a string but {}",
                        self.text_field,
                        json_kind(&other)
                    ),
                );
            }
        };
        let id = match obj.remove(self.id_field) {
            Some(Json::String(s)) if !s.is_empty() => s,
            Some(Json::Number(n)) => n.to_string(),
            _ => fallback_id,
        };
        if text.trim().chars().count() < self.min_chars.max(1) {
            stats.empty_text += 1;
            return Ok(());
        }
        if !self.seen_ids.insert(id.clone()) {
            stats.duplicate_ids += 1;
            return self
                .errors
                .record(self.policy, place, &format!("duplicate id {id:?}"));
        }
        let mut rec = Map::new();
        rec.insert("id".into(), Json::String(id));
        self.chars += text.chars().count() as u64;
        rec.insert("text".into(), Json::String(text));
        for (k, v) in obj {
            if k != "id" && k != "text" {
                rec.insert(k, v);
            }
        }
        stats.documents += 1;
        self.writer.write_json(&Json::Object(rec))
    }
}

fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn read_jsonl(
    path: &Path,
    norm: &mut Normaliser,
    stats: &mut SourceStats,
    ctx: &OpContext,
) -> OpResult<()> {
    let name = path.display().to_string();
    let broken = read_lines(path, |line_no, line| {
        if line_no.is_multiple_of(4096) {
            ctx.check_cancelled()?;
        }
        if line.trim().is_empty() {
            return Ok(());
        }
        let place = format!("{name}:{line_no}");
        match serde_json::from_str::<Json>(line) {
            Ok(Json::Object(obj)) => norm.take(&place, format!("{name}:{line_no}"), obj, stats),
            Ok(other) => {
                stats.errors += 1;
                norm.errors.record(
                    norm.policy,
                    &place,
                    &format!("expected a JSON object, got {}", json_kind(&other)),
                )
            }
            Err(e) => {
                stats.errors += 1;
                let what = if let Some(rest) = line.strip_prefix('\u{0}') {
                    rest.to_string()
                } else {
                    format!("malformed JSON: {e}")
                };
                norm.errors.record(norm.policy, &place, &what)
            }
        }
    })?;
    if let Some(what) = broken {
        stats.errors += 1;
        norm.errors.record(norm.policy, &name, &what)?;
        stats.broken_off = Some(what);
    }
    Ok(())
}

fn read_parquet(
    path: &Path,
    norm: &mut Normaliser,
    stats: &mut SourceStats,
    ctx: &OpContext,
) -> OpResult<()> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let name = path.display().to_string();
    let file = File::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {name}"))?;
    let reader = match SerializedFileReader::new(file) {
        Ok(r) => r,
        Err(e) => {
            stats.errors += 1;
            return norm.errors.record(
                norm.policy,
                &name,
                &format!("not a readable parquet file: {e}"),
            );
        }
    };
    let columns: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    if !columns.iter().any(|c| c == norm.text_field) {
        stats.errors += 1;
        return norm.errors.record(
            norm.policy,
            &name,
            &format!(
                "parquet file has no `{}` column (columns: {}); set text_field",
                norm.text_field,
                columns.join(", ")
            ),
        );
    }
    // Row group by row group: a corrupt page costs the rest of its row
    // group (counted from the footer's row counts), not the rest of the file.
    let mut first_row = 0u64; // rows of the row groups before this one
    for g in 0..reader.num_row_groups() {
        let group_rows = reader.metadata().row_group(g).num_rows().max(0) as u64;
        let mut taken = 0u64;
        let group = reader.get_row_group(g);
        let rows = group
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|rg| rg.get_row_iter(None).map_err(|e| e.to_string()));
        let failure = match rows {
            Err(e) => Some((first_row + 1, e)),
            Ok(rows) => {
                let mut failure = None;
                for row in rows {
                    let i = first_row + taken;
                    if i.is_multiple_of(4096) {
                        ctx.check_cancelled()?;
                    }
                    match row {
                        Ok(row) => {
                            taken += 1;
                            let obj: Map<String, Json> = row
                                .get_column_iter()
                                .map(|(k, f)| (k.clone(), field_to_json(f)))
                                .collect();
                            norm.take(
                                &format!("{name}:row {}", i + 1),
                                format!("{name}:{}", i + 1),
                                obj,
                                stats,
                            )?
                        }
                        Err(e) => {
                            failure = Some((i + 1, e.to_string()));
                            break;
                        }
                    }
                }
                failure
            }
        };
        if let Some((row, e)) = failure {
            let lost = group_rows.saturating_sub(taken);
            stats.errors += 1;
            stats.documents_lost += lost;
            norm.errors.record(
                norm.policy,
                &format!("{name}:row {row}"),
                &format!(
                    "cannot decode row group {g} ({e}): its {lost} remaining of {group_rows} documents are lost; the next row group is read"
                ),
            )?;
        }
        first_row += group_rows;
    }
    Ok(())
}

/// A parquet value as JSON: scalars map to JSON scalars, binary to a lossy
/// UTF-8 string, nested values to their text form.
fn field_to_json(f: &parquet::record::Field) -> Json {
    use parquet::record::Field;
    match f {
        Field::Null => Json::Null,
        Field::Bool(b) => Json::Bool(*b),
        Field::Byte(x) => (*x).into(),
        Field::Short(x) => (*x).into(),
        Field::Int(x) => (*x).into(),
        Field::Long(x) => (*x).into(),
        Field::UByte(x) => (*x).into(),
        Field::UShort(x) => (*x).into(),
        Field::UInt(x) => (*x).into(),
        Field::ULong(x) => (*x).into(),
        Field::Float(x) => serde_json::Number::from_f64(*x as f64)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Field::Double(x) => serde_json::Number::from_f64(*x)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Field::Str(s) => Json::String(s.clone()),
        Field::Bytes(b) => Json::String(String::from_utf8_lossy(b.data()).into_owned()),
        Field::TimestampMillis(x) | Field::TimestampMicros(x) => (*x).into(),
        other => Json::String(other.to_string()),
    }
}

impl Op for Corpus {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "corpus",
            version: 2,
            doc: "Reads FineWeb-2 parquet shards and JSONL (plain, .gz, .zst) into a normalised corpus: zstd JSONL shards docs-NNNNN.jsonl.zst of {id, text, ...source fields} and corpus.json statistics.",
            params: vec![
                Param::required(
                    "input",
                    Type::Either(Box::new(Type::Either(Box::new(Type::File), Box::new(Type::Dir))), Box::new(Type::List(Box::new(Type::File)))),
                    "a file, a list of files, or a directory searched recursively for `pattern` (the engine hashes their content, so a changed shard changes the key)",
                ),
                Param::optional("pattern", Type::Str, Value::Str("*.{parquet,jsonl,jsonl.gz,jsonl.zst}".into()), "glob for files under a directory input: `*`, `**`, `?`, `{a,b}`"),
                Param::optional("format", Type::Enum(vec!["auto".into(), "jsonl".into(), "parquet".into()]), Value::Str("auto".into()), "input format; auto: by file extension"),
                Param::optional("text_field", Type::Str, Value::Str("text".into()), "field holding the document text"),
                Param::optional("id_field", Type::Str, Value::Str("id".into()), "field holding the document id (missing: file:line)"),
                Param::optional("min_chars", Type::Int, Value::Int(1), "documents with fewer non-blank characters are dropped (counted as empty_text)"),
                Param::optional("docs_per_shard", Type::Int, Value::Int(100_000), "documents per output shard"),
                on_error_param(),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "stats", ty: Type::File, doc: "corpus.json: documents, characters, per source file and per shard counts, errors" }],
            resources: Resources::ONE_THREAD,
        }
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let policy = OnError::from_ctx(ctx)?;
        let inputs = resolve_inputs(ctx.value("input")?, ctx.str("pattern")?)?;
        let forced = ctx.str("format")?;
        let per_shard = ctx.int("docs_per_shard")?.max(1) as u64;
        let mut norm = Normaliser {
            text_field: ctx.str("text_field")?,
            id_field: ctx.str("id_field")?,
            min_chars: ctx.int("min_chars")?.max(0) as usize,
            policy,
            seen_ids: HashSet::new(),
            writer: ShardWriter::new(&ctx.out_dir, "docs", per_shard),
            errors: ErrorLog::default(),
            chars: 0,
        };
        ctx.progress.set_total(inputs.len() as u64, "files");
        let mut sources = Vec::new();
        for path in &inputs {
            let format = detect_format(path, forced)?;
            let (bytes, hash) = hash_file(path)?;
            let mut stats = SourceStats {
                path: path.display().to_string(),
                format: if format == Format::Parquet {
                    "parquet"
                } else {
                    "jsonl"
                },
                bytes,
                blake3: hash,
                ..Default::default()
            };
            match format {
                Format::Jsonl => read_jsonl(path, &mut norm, &mut stats, ctx)?,
                Format::Parquet => read_parquet(path, &mut norm, &mut stats, ctx)?,
            }
            if stats.documents == 0 && stats.errors == 0 {
                ctx.log(&format!("{}: no documents (empty shard)", path.display()));
            }
            ctx.log(&format!(
                "{}: {} documents, {} errors",
                path.display(),
                stats.documents,
                stats.errors
            ));
            sources.push(stats);
            ctx.progress.inc(1);
        }
        let chars = norm.chars;
        let errors = norm.errors;
        let shards = norm.writer.finish()?;
        let documents: u64 = sources.iter().map(|s| s.documents).sum();
        if documents == 0 {
            return Err(miette!(
                help = "check the input files and text_field; corpus.json lists per-file errors only on success",
                "no documents were read from {} file(s) ({} bad records; first: {})",
                inputs.len(),
                errors.count,
                errors.examples.first().map(String::as_str).unwrap_or("none")
            ));
        }
        let stats = serde_json::json!({
            "documents": documents,
            "characters": chars,
            "empty_text": sources.iter().map(|s| s.empty_text).sum::<u64>(),
            "duplicate_ids": sources.iter().map(|s| s.duplicate_ids).sum::<u64>(),
            "documents_lost": sources.iter().map(|s| s.documents_lost).sum::<u64>(),
            "broken_off_files": sources.iter().filter(|s| s.broken_off.is_some()).count(),
            "errors": errors,
            "sources": sources,
            "shards": shards.iter().map(|(f, n)| serde_json::json!({"file": f, "documents": n})).collect::<Vec<_>>(),
        });
        write_json_atomic(&ctx.out_dir.join("corpus.json"), &stats)?;
        let mut out = BTreeMap::new();
        out.insert("stats".to_string(), Value::Path("corpus.json".into()));
        Ok(out)
    }
}

/// A test harness: builds an [`OpContext`] around an op's spec defaults.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    use crate::op::Value;

    /// The repository's data/demo directory.
    pub fn demo_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/demo")
    }

    pub use crate::op::testing::run_op;

    /// The demo corpus (JSONL) read by `corpus` into `out`.
    pub fn demo_corpus(out: &Path) -> PathBuf {
        run_op(
            &super::Corpus,
            &[("input", Value::Path(demo_dir().join("fineweb2-demo.jsonl")))],
            out,
        )
        .unwrap();
        out.to_path_buf()
    }

    /// A tiny random Qwen2 model (hidden 32, 2 layers) with a whitespace
    /// word-level tokenizer over `words` (id 0 `</s>` = EOS, 1 `<unk>`) and a
    /// plain chat template, for tests of the model-backed paths.
    pub fn tiny_model(dir: &Path, words: &[String]) -> PathBuf {
        use rand::{Rng, SeedableRng};
        std::fs::create_dir_all(dir).unwrap();
        let mut vocab = serde_json::Map::new();
        vocab.insert("</s>".into(), 0.into());
        vocab.insert("<unk>".into(), 1.into());
        for w in words {
            let next = vocab.len();
            vocab.entry(w.clone()).or_insert(next.into());
        }
        let config = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "vocab_size": vocab.len(), "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "max_position_embeddings": 4096, "tie_word_embeddings": true, "eos_token_id": 0
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let config = flow_model::Config::load(dir).unwrap();
        let mut params = flow_model::Params::zeros(&config);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for (name, data) in params.names.iter().zip(params.data.iter_mut()) {
            for x in data.iter_mut() {
                *x = if name.contains("norm") {
                    1.0
                } else {
                    rng.random_range(-0.2..0.2)
                };
            }
        }
        let model = flow_model::Model::from_params(config, params).unwrap();
        model.save(dir, flow_model::SaveDtype::F32).unwrap();
        let tok = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 0, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
        let tc = serde_json::json!({"eos_token": "</s>", "chat_template": "{% for m in messages %}{{ m.content }} {% endfor %}"});
        std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
        dir.to_path_buf()
    }

    /// The distinct whitespace-separated words of the demo corpus.
    pub fn demo_words() -> Vec<String> {
        let text = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl")).unwrap();
        let mut words: Vec<String> = text
            .lines()
            .flat_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["text"]
                    .as_str()
                    .unwrap()
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        words.sort();
        words.dedup();
        words
    }

    /// All records of a corpus artifact.
    pub fn read_corpus(dir: &Path) -> Vec<serde_json::Value> {
        let mut docs = Vec::new();
        for shard in super::corpus_shards(dir).unwrap() {
            super::for_each_line(&shard, |_, l| {
                docs.push(serde_json::from_str(l).unwrap());
                Ok(())
            })
            .unwrap();
        }
        docs
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn demo_jsonl_lines() -> Vec<Json> {
        std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn glob_matching_rules() {
        let m = |p: &str, t: &str| InputPattern::new(p).unwrap().matches(Path::new(t));
        assert!(m("*.parquet", "a.parquet"));
        assert!(m("*.parquet", "deep/down/a.parquet")); // no `/`: the file name
        assert!(!m("*.parquet", "a.parquet.tmp"));
        assert!(m("*.{parquet,jsonl.gz}", "x.jsonl.gz"));
        assert!(m("**/*.jsonl", "deu_Latn/train/x.jsonl"));
        assert!(m("**/*.jsonl", "x.jsonl"));
        assert!(!m("*/x.jsonl", "a/b/x.jsonl"));
        assert!(m("shard-??.jsonl", "shard-07.jsonl"));
        let e = InputPattern::new("*.{parquet").err().unwrap().to_string();
        assert!(e.contains("not a valid glob"), "{e}");
    }

    #[test]
    fn corpus_reads_jsonl_and_parquet_alike() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        run_op(
            &Corpus,
            &[("input", Value::Path(demo_dir().join("fineweb2-demo.jsonl")))],
            &a,
        )
        .unwrap();
        run_op(
            &Corpus,
            &[(
                "input",
                Value::Path(demo_dir().join("fineweb2-demo.parquet")),
            )],
            &b,
        )
        .unwrap();
        let from_jsonl = read_corpus(&a);
        let from_parquet = read_corpus(&b);
        let source = demo_jsonl_lines();
        assert_eq!(from_jsonl.len(), source.len());
        assert_eq!(from_parquet.len(), source.len());
        for ((j, p), s) in from_jsonl.iter().zip(&from_parquet).zip(&source) {
            assert_eq!(j["id"], s["id"]);
            assert_eq!(j["text"], s["text"]);
            assert_eq!(p["id"], s["id"]);
            assert_eq!(p["text"], s["text"]);
            assert_eq!(p["url"], s["url"]);
            assert_eq!(p["language_score"], s["language_score"]);
        }
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(b.join("corpus.json")).unwrap()).unwrap();
        assert_eq!(stats["documents"], source.len() as u64);
        assert_eq!(stats["sources"][0]["format"], "parquet");
    }

    #[test]
    fn corpus_reads_compressed_jsonl_from_a_directory_glob_and_shards_output() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src/deu_Latn");
        std::fs::create_dir_all(&src).unwrap();
        let lines: Vec<String> = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let (first, second) = lines.split_at(100);
        let mut gz = flate2::write::GzEncoder::new(
            File::create(src.join("p0.jsonl.gz")).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all((first.join("\n") + "\n").as_bytes()).unwrap();
        gz.finish().unwrap();
        std::fs::write(
            src.join("p1.jsonl.zst"),
            zstd::encode_all((second.join("\n") + "\n").as_bytes(), 3).unwrap(),
        )
        .unwrap();
        std::fs::write(src.join("notes.txt"), "not a shard").unwrap();
        let out = tmp.path().join("out");
        run_op(
            &Corpus,
            &[
                ("input", Value::Path(tmp.path().join("src"))),
                ("pattern", Value::Str("**/*.jsonl.*".into())),
                ("docs_per_shard", Value::Int(100)),
            ],
            &out,
        )
        .unwrap();
        let docs = read_corpus(&out);
        assert_eq!(docs.len(), lines.len());
        let shards = corpus_shards(&out).unwrap();
        assert_eq!(shards.len(), lines.len().div_ceil(100));
    }

    #[test]
    fn corpus_reports_malformed_lines_and_empty_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"id\":\"a\",\"text\":\"Hallo Welt\"}\n{not json\n{\"id\":\"c\"}\n[1,2]\n{\"id\":\"e\",\"text\":\"Noch ein Text\"}\n").unwrap();
        let empty = tmp.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let files = Value::List(vec![Value::Path(bad.clone()), Value::Path(empty)]);
        let err = run_op(
            &Corpus,
            &[
                ("input", files.clone()),
                ("on_error", Value::Str("fail".into())),
            ],
            &tmp.path().join("o1"),
        )
        .unwrap_err();
        let msg = format!("{err:?}");
        assert!(msg.contains("bad.jsonl:2"), "{msg}");
        let out = tmp.path().join("o2");
        run_op(&Corpus, &[("input", files)], &out).unwrap();
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("corpus.json")).unwrap())
                .unwrap();
        assert_eq!(stats["documents"], 2);
        assert_eq!(stats["errors"]["count"], 3);
        let examples = stats["errors"]["examples"].as_array().unwrap();
        assert!(examples[0]
            .as_str()
            .unwrap()
            .contains("bad.jsonl:2: malformed JSON"));
        assert!(examples[1]
            .as_str()
            .unwrap()
            .contains("bad.jsonl:3: no `text` field"));
        assert!(examples[2].as_str().unwrap().contains("bad.jsonl:4"));
        assert_eq!(stats["sources"][1]["documents"], 0);
    }

    #[test]
    fn corpus_reports_parquet_without_text_column() {
        use parquet::data_type::ByteArray;
        use parquet::file::writer::SerializedFileWriter;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("no_text.parquet");
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message s { REQUIRED BYTE_ARRAY id (UTF8); }",
            )
            .unwrap(),
        );
        let mut w =
            SerializedFileWriter::new(File::create(&path).unwrap(), schema, Default::default())
                .unwrap();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<parquet::data_type::ByteArrayType>()
            .write_batch(&[ByteArray::from("x1")], None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
        w.close().unwrap();
        let err = run_op(
            &Corpus,
            &[
                ("input", Value::Path(path.clone())),
                ("on_error", Value::Str("fail".into())),
            ],
            &tmp.path().join("o"),
        )
        .unwrap_err();
        let msg = format!("{err:?}");
        assert!(
            msg.contains("no_text.parquet")
                && msg.contains("no `text` column")
                && msg.contains("columns: id"),
            "{msg}"
        );
        // skipping leaves nothing: the op says so instead of writing an empty corpus
        let err = run_op(
            &Corpus,
            &[("input", Value::Path(path))],
            &tmp.path().join("o2"),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("no documents"));
    }

    /// Adversarial run, issue 12 item 8: one corrupt page made the reader
    /// stop at the first bad row, dropping the rest of the file with exit 0.
    /// Now only the rest of that row group is lost, and counted.
    #[test]
    fn a_corrupt_parquet_page_costs_only_its_row_group_and_is_counted() {
        use parquet::basic::{Compression, Encoding};
        use parquet::data_type::ByteArray;
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("three_groups.parquet");
        let schema = Arc::new(
            parquet::schema::parser::parse_message_type(
                "message s { REQUIRED BYTE_ARRAY text (UTF8); }",
            )
            .unwrap(),
        );
        // Plain, uncompressed pages: each value is a 4-byte length and its bytes.
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_encoding(Encoding::PLAIN)
            .build();
        let mut w =
            SerializedFileWriter::new(File::create(&path).unwrap(), schema, Arc::new(props))
                .unwrap();
        for g in 0..3 {
            let docs: Vec<ByteArray> = (0..10)
                .map(|i| ByteArray::from(format!("Dokument {g}-{i:02} über Anatomie").as_str()))
                .collect();
            let mut rg = w.next_row_group().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            col.typed::<parquet::data_type::ByteArrayType>()
                .write_batch(&docs, None, None)
                .unwrap();
            col.close().unwrap();
            rg.close().unwrap();
        }
        w.close().unwrap();
        // Break the length of the fourth value of the middle row group.
        let mut bytes = std::fs::read(&path).unwrap();
        let marker = "Dokument 1-03".as_bytes();
        let at = bytes
            .windows(marker.len())
            .position(|w| w == marker)
            .unwrap();
        bytes[at - 4..at].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();

        let out = tmp.path().join("o");
        run_op(&Corpus, &[("input", Value::Path(path.clone()))], &out).unwrap();
        let texts: Vec<String> = read_corpus(&out)
            .iter()
            .map(|d| d["text"].as_str().unwrap().to_string())
            .collect();
        // Row groups 0 and 2 whole; of row group 1 at most the rows before the break.
        assert!(
            texts
                .iter()
                .filter(|t| t.starts_with("Dokument 0-"))
                .count()
                == 10
        );
        assert!(
            texts
                .iter()
                .filter(|t| t.starts_with("Dokument 2-"))
                .count()
                == 10
        );
        let kept_of_1 = texts
            .iter()
            .filter(|t| t.starts_with("Dokument 1-"))
            .count() as u64;
        let stats: Json =
            serde_json::from_str(&std::fs::read_to_string(out.join("corpus.json")).unwrap())
                .unwrap();
        assert_eq!(stats["documents"], texts.len() as u64);
        // Every document is either kept or counted as lost.
        assert_eq!(
            stats["documents_lost"].as_u64().unwrap() + kept_of_1,
            10,
            "{stats}"
        );
        assert_eq!(stats["errors"]["count"], 1, "{stats}");
        let example = stats["errors"]["examples"][0].as_str().unwrap();
        assert!(
            example.contains("three_groups.parquet") && example.contains("row group 1"),
            "{example}"
        );

        // Under on_error: "fail" the same file fails, naming the row group.
        let err = run_op(
            &Corpus,
            &[
                ("input", Value::Path(path)),
                ("on_error", Value::Str("fail".into())),
            ],
            &tmp.path().join("o2"),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("row group 1"), "{err:?}");
    }

    /// Issue 12 item 8: a truncated `.gz` or `.zst` under on_error "skip"
    /// keeps what was read and says where it broke off; a UTF-8 BOM does
    /// not cost the first document.
    #[test]
    fn truncated_streams_keep_what_was_read_and_a_bom_costs_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let lines: String = (0..20000)
            .map(|i| {
                format!(
                    "{{\"id\": \"d{i}\", \"text\": \"Text {i}: Blutdruck und Herzfrequenz {}\"}}\n",
                    i * 7919 % 1000
                )
            })
            .collect();
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(lines.as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(lines.as_bytes(), 3).unwrap();
        for (name, whole) in [("a.jsonl.gz", gz), ("a.jsonl.zst", zst)] {
            let path = tmp.path().join(name);
            std::fs::write(&path, &whole[..whole.len() * 2 / 3]).unwrap();
            let out = tmp.path().join(format!("o-{name}"));
            run_op(&Corpus, &[("input", Value::Path(path))], &out).unwrap();
            let docs = read_corpus(&out);
            let stats: Json =
                serde_json::from_str(&std::fs::read_to_string(out.join("corpus.json")).unwrap())
                    .unwrap();
            assert!(
                docs.len() > 1000 && docs.len() < 20000,
                "{name}: {} documents",
                docs.len()
            );
            // What was kept is a prefix of the file, in order.
            for (i, d) in docs.iter().enumerate() {
                assert_eq!(d["id"], format!("d{i}"), "{name}");
            }
            let broke = stats["sources"][0]["broken_off"].as_str().unwrap();
            assert!(
                broke.contains(name) && broke.contains("breaks off"),
                "{name}: {broke}"
            );
            assert_eq!(stats["broken_off_files"], 1);
        }
        let path = tmp.path().join("bom.jsonl");
        std::fs::write(
            &path,
            format!("\u{feff}{}", &lines[..lines.find('\n').unwrap() + 1]),
        )
        .unwrap();
        let out = tmp.path().join("o-bom");
        run_op(&Corpus, &[("input", Value::Path(path))], &out).unwrap();
        let docs = read_corpus(&out);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["id"], "d0");
    }
}
