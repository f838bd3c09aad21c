//! The `corpus` op: FineWeb-2 parquet and JSONL in, normalised shards out.

use super::*;
use crate::artifacts::data::{CorpusSource, CorpusStats, ShardCount};
use crate::artifacts::JsonFile;
use crate::op::ParamsShape;

// ---------------------------------------------------------------------------
// The op.

/// The `corpus` op.
pub struct Corpus;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Jsonl,
    Parquet,
}

/// The `format` param: a format, or `auto` (by file extension).
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FormatParam {
    Auto,
    Jsonl,
    Parquet,
}

/// `corpus`'s params (see its spec).
#[derive(Clone, Deserialize)]
struct CorpusParams {
    input: InputParam,
    pattern: String,
    format: FormatParam,
    text_field: String,
    id_field: String,
    min_chars: usize,
    docs_per_shard: u64,
    on_error: OnError,
}

/// The `input` param: a file or directory, or a list of files.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum InputParam {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl InputParam {
    fn paths(&self) -> &[PathBuf] {
        match self {
            InputParam::One(p) => std::slice::from_ref(p),
            InputParam::Many(ps) => ps,
        }
    }
}

pub(super) fn detect_format(path: &Path, forced: FormatParam) -> OpResult<Format> {
    match forced {
        FormatParam::Jsonl => return Ok(Format::Jsonl),
        FormatParam::Parquet => return Ok(Format::Parquet),
        FormatParam::Auto => {}
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

pub(super) fn hash_file(path: &Path) -> OpResult<(u64, String)> {
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

pub(super) struct Normaliser<'a> {
    text_field: &'a str,
    id_field: &'a str,
    min_chars: usize,
    policy: OnError,
    writer: ShardWriter,
    /// What the merge replays, in input order: the documents written (in
    /// `writer`'s order) and the bad records between them.
    events: Vec<Event>,
}

/// One step of reading a source file that the merge replays: ids are
/// checked for duplicates across all files, bad records counted, in the
/// order a single reader meets them.
#[derive(Serialize, Deserialize)]
pub(super) enum Event {
    /// A document, written as the next line of the part's documents.
    Doc { id: String, at: String, chars: u64 },
    /// A bad record (under `on_error: "skip"`).
    Bad { at: String, what: String },
}

impl Normaliser<'_> {
    /// A bad record: the error under `on_error: "fail"`, else an event.
    fn bad(&mut self, place: &str, what: &str) -> OpResult<()> {
        if self.policy == OnError::Fail {
            return self.policy.record(&mut ErrorLog::default(), place, what);
        }
        self.events.push(Event::Bad {
            at: place.to_string(),
            what: what.to_string(),
        });
        Ok(())
    }

    /// Turns a source record into a corpus record and writes it.
    fn take(
        &mut self,
        place: &str,
        fallback_id: String,
        mut obj: Map<String, Json>,
        stats: &mut CorpusSource,
    ) -> OpResult<()> {
        let text = match obj.remove(self.text_field) {
            Some(Json::String(s)) => s,
            Some(Json::Null) | None => {
                stats.errors += 1;
                return self.bad(place, &format!("no `{}` field", self.text_field));
            }
            Some(other) => {
                stats.errors += 1;
                return self.bad(
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
        let mut rec = Map::new();
        rec.insert("id".into(), Json::String(id.clone()));
        let chars = text.chars().count() as u64;
        rec.insert("text".into(), Json::String(text));
        for (k, v) in obj {
            if k != "id" && k != "text" {
                rec.insert(k, v);
            }
        }
        self.events.push(Event::Doc {
            id,
            at: place.to_string(),
            chars,
        });
        self.writer.write_json(&Json::Object(rec))
    }
}

pub(super) fn json_kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

pub(super) fn read_jsonl(
    path: &Path,
    norm: &mut Normaliser,
    stats: &mut CorpusSource,
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
                norm.bad(
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
                norm.bad(&place, &what)
            }
        }
    })?;
    if let Some(what) = broken {
        stats.errors += 1;
        norm.bad(&name, &what)?;
        stats.broken_off = Some(what);
    }
    Ok(())
}

/// Rows a record batch of the parquet reader holds: FineWeb-2 rows are a
/// few kilobytes, so a batch is a few megabytes however large the file.
const PARQUET_BATCH_ROWS: usize = 1024;

/// Reads a parquet file with the arrow record-batch reader, one row group
/// at a time in batches of [`PARQUET_BATCH_ROWS`] rows (streaming: a
/// multi-gigabyte shard is never held whole). Every top-level column is
/// read, none is projected away: a corpus record keeps all source fields.
pub(super) fn read_parquet(
    path: &Path,
    norm: &mut Normaliser,
    stats: &mut CorpusSource,
    ctx: &OpContext,
) -> OpResult<()> {
    use parquet::arrow::arrow_reader::{
        ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
    };
    let name = path.display().to_string();
    let file = File::open(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot open {name}"))?;
    // Column types from the parquet schema alone, not from an arrow schema
    // a writer may have embedded: the same columns give the same JSON
    // whichever library wrote the file.
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let meta = match ArrowReaderMetadata::load(&file, options) {
        Ok(m) => m,
        Err(e) => {
            stats.errors += 1;
            return norm.bad(&name, &format!("not a readable parquet file: {e}"));
        }
    };
    let schema = meta.schema().clone();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if !columns.contains(&norm.text_field) {
        stats.errors += 1;
        return norm.bad(
            &name,
            &format!(
                "parquet file has no `{}` column (columns: {}); set text_field",
                norm.text_field,
                columns.join(", ")
            ),
        );
    }
    let row_groups = meta.metadata().row_groups();
    if let Some(f) = schema
        .fields()
        .iter()
        .find(|f| !json_convertible(f.data_type()))
    {
        let rows: u64 = row_groups.iter().map(|g| g.num_rows().max(0) as u64).sum();
        stats.errors += 1;
        stats.documents_lost += rows;
        return norm.bad(
            &name,
            &format!(
                "column `{}` has type {}, which corpus cannot write as JSON: the file's {rows} documents are lost",
                f.name(),
                f.data_type()
            ),
        );
    }
    // Row group by row group: a corrupt page costs the rest of its row
    // group (counted from the footer's row counts), not the rest of the file.
    let mut first_row = 0u64; // rows of the row groups before this one
    for (g, group) in row_groups.iter().enumerate() {
        let group_rows = group.num_rows().max(0) as u64;
        let mut taken = 0u64;
        let batches = file.try_clone().map_err(|e| e.to_string()).and_then(|f| {
            ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta.clone())
                .with_row_groups(vec![g])
                .with_batch_size(PARQUET_BATCH_ROWS)
                .build()
                .map_err(|e| e.to_string())
        });
        let failure = match batches {
            Err(e) => Some(e),
            Ok(mut batches) => loop {
                ctx.check_cancelled()?;
                let batch = match batches.next() {
                    None if taken < group_rows => {
                        break Some(format!("it ends after {taken} rows"));
                    }
                    None => break None,
                    Some(Err(e)) => break Some(e.to_string()),
                    Some(Ok(batch)) => batch,
                };
                for row in 0..batch.num_rows() {
                    let i = first_row + taken;
                    taken += 1;
                    let obj: Map<String, Json> = columns
                        .iter()
                        .zip(batch.columns())
                        .map(|(k, column)| (k.to_string(), arrow_value_to_json(column, row)))
                        .collect();
                    norm.take(
                        &format!("{name}:row {}", i + 1),
                        format!("{name}:{}", i + 1),
                        obj,
                        stats,
                    )?
                }
            },
        };
        if let Some(e) = failure {
            let lost = group_rows.saturating_sub(taken);
            stats.errors += 1;
            stats.documents_lost += lost;
            norm.bad(
                &format!("{name}:row {}", first_row + taken + 1),
                &format!(
                    "cannot decode row group {g} ({e}): its {lost} remaining of {group_rows} documents are lost; the next row group is read"
                ),
            )?;
        }
        first_row += group_rows;
    }
    Ok(())
}

/// Whether [`arrow_value_to_json`] converts values of type `t`: the types
/// the parquet schema maps to (without an embedded arrow schema), nested
/// ones when their parts are.
fn json_convertible(t: &arrow_schema::DataType) -> bool {
    use arrow_schema::DataType as T;
    match t {
        T::Null
        | T::Boolean
        | T::Int8
        | T::Int16
        | T::Int32
        | T::Int64
        | T::UInt8
        | T::UInt16
        | T::UInt32
        | T::UInt64
        | T::Float16
        | T::Float32
        | T::Float64
        | T::Utf8
        | T::Binary
        | T::FixedSizeBinary(_)
        | T::Date32
        | T::Timestamp(..)
        | T::Time32(_)
        | T::Time64(_)
        | T::Decimal128(..)
        | T::Decimal256(..) => true,
        T::List(item) => json_convertible(item.data_type()),
        T::Struct(fields) => fields.iter().all(|f| json_convertible(f.data_type())),
        T::Map(entries, _) => json_convertible(entries.data_type()),
        _ => false,
    }
}

/// Row `i` of a parquet column as JSON: integers, floats (NaN and
/// infinities as null) and booleans as themselves; strings, and binary as
/// lossy UTF-8; timestamps and times as the integer stored, in the
/// column's unit; dates as `YYYY-MM-DD`; decimals as their exact text;
/// lists as arrays; structs and maps as objects (a non-string map key by
/// its JSON text).
pub(super) fn arrow_value_to_json(a: &dyn arrow_array::Array, i: usize) -> Json {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_array::Array;
    use arrow_schema::{DataType as T, TimeUnit};
    if a.is_null(i) {
        return Json::Null;
    }
    let float = |x: f64| {
        serde_json::Number::from_f64(x)
            .map(Json::Number)
            .unwrap_or(Json::Null)
    };
    let lossy = |b: &[u8]| Json::String(String::from_utf8_lossy(b).into_owned());
    let list = |items: arrow_array::ArrayRef| {
        Json::Array(
            (0..items.len())
                .map(|k| arrow_value_to_json(&items, k))
                .collect(),
        )
    };
    match a.data_type() {
        T::Boolean => Json::Bool(a.as_boolean().value(i)),
        T::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        T::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        T::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        T::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        T::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        T::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        T::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        T::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        T::Float16 => float(a.as_primitive::<Float16Type>().value(i).to_f64()),
        T::Float32 => float(a.as_primitive::<Float32Type>().value(i) as f64),
        T::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        T::Utf8 => Json::String(a.as_string::<i32>().value(i).to_string()),
        T::Binary => lossy(a.as_binary::<i32>().value(i)),
        T::FixedSizeBinary(_) => lossy(a.as_fixed_size_binary().value(i)),
        T::Date32 => {
            let days = a.as_primitive::<Date32Type>();
            match days.value_as_date(i) {
                Some(date) => Json::String(date.format("%Y-%m-%d").to_string()),
                None => days.value(i).into(),
            }
        }
        T::Timestamp(unit, _) => match unit {
            TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i).into(),
            TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i).into(),
            TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i).into(),
            TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i).into(),
        },
        T::Time32(TimeUnit::Second) => a.as_primitive::<Time32SecondType>().value(i).into(),
        T::Time32(_) => a.as_primitive::<Time32MillisecondType>().value(i).into(),
        T::Time64(TimeUnit::Microsecond) => {
            a.as_primitive::<Time64MicrosecondType>().value(i).into()
        }
        T::Time64(_) => a.as_primitive::<Time64NanosecondType>().value(i).into(),
        T::Decimal128(..) => Json::String(a.as_primitive::<Decimal128Type>().value_as_string(i)),
        T::Decimal256(..) => Json::String(a.as_primitive::<Decimal256Type>().value_as_string(i)),
        T::List(_) => list(a.as_list::<i32>().value(i)),
        T::Struct(fields) => {
            let s = a.as_struct();
            Json::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, column)| (f.name().clone(), arrow_value_to_json(column, i)))
                    .collect(),
            )
        }
        T::Map(..) => {
            let entries = a.as_map().value(i);
            let (keys, values) = (entries.column(0), entries.column(1));
            Json::Object(
                (0..entries.len())
                    .map(|k| {
                        let key = match arrow_value_to_json(keys, k) {
                            Json::String(s) => s,
                            other => other.to_string(),
                        };
                        (key, arrow_value_to_json(values, k))
                    })
                    .collect(),
            )
        }
        // Null, and the types `json_convertible` turns away before reading.
        _ => Json::Null,
    }
}

impl Op for Corpus {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "corpus",
            version: 4,
            doc: "Reads FineWeb-2 parquet shards and JSONL (plain, .gz, .zst) into a normalised corpus: zstd JSONL shards docs-NNNNN.jsonl.zst of {id, text, ...source fields} and corpus.json statistics.",
            params: vec![
                Param::required(
                    "input",
                    Type::Either(Box::new(Type::Either(Box::new(Type::File), Box::new(Type::Dir))), Box::new(Type::List(Box::new(Type::File)))),
                    "a file, a list of files, or a directory searched recursively for `pattern` (the engine hashes their content, so a changed shard changes the key)",
                ),
                Param::optional("pattern", Type::Str, Value::Str("*.{parquet,jsonl,jsonl.gz,jsonl.zst}".into()), "glob for files under a directory input: `*`, `**`, `?`, `{a,b}`"),
                Param::optional("format", Type::enum_of::<FormatParam>(), Value::Str("auto".into()), "input format; auto: by file extension"),
                Param::optional("text_field", Type::Str, Value::Str("text".into()), "field holding the document text"),
                Param::optional("id_field", Type::Str, Value::Str("id".into()), "field holding the document id (missing: file:line)"),
                Param::optional("min_chars", Type::Int, Value::Int(1), "documents with fewer non-blank characters are dropped (counted as empty_text)").at_least(0.0),
                Param::optional("docs_per_shard", Type::Int, Value::Int(100_000), "documents per output shard").at_least(1.0),
                on_error_param(),
            ],
            produces: Type::Dir,
            outputs: vec![Output { name: "stats", ty: Type::File, doc: "corpus.json: documents, characters, per source file and per shard counts, errors" }],
            resources: Resources::ALL_THREADS,
        }
    }

    fn params_shape(&self) -> Option<ParamsShape> {
        Some(ParamsShape::of::<CorpusParams>())
    }

    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        run_in_parts(self, ctx, None)
    }

    fn sharding(&self) -> Option<&dyn Sharded> {
        Some(self)
    }
}

/// One source file as a shard task read it (an entry of its `part.json`):
/// its statistics (documents and duplicate ids are counted by the merge)
/// and the part's files of its documents and events.
#[derive(Serialize, Deserialize)]
struct SourcePart {
    stats: CorpusSource,
    /// `None`: the file had no document.
    docs_file: Option<String>,
    events_file: String,
}

/// Reads input `piece` (the file `path`) into the part directory.
fn read_source(
    ctx: &OpContext,
    p: &CorpusParams,
    piece: usize,
    path: &Path,
) -> OpResult<SourcePart> {
    let format = detect_format(path, p.format)?;
    let mut norm = Normaliser {
        text_field: &p.text_field,
        id_field: &p.id_field,
        min_chars: p.min_chars,
        policy: p.on_error,
        writer: ShardWriter::new(&ctx.out_dir, &format!("norm-{piece:05}"), u64::MAX),
        events: Vec::new(),
    };
    let (bytes, hash) = hash_file(path)?;
    let mut stats = CorpusSource {
        path: path.display().to_string(),
        format: if format == Format::Parquet {
            "parquet"
        } else {
            "jsonl"
        }
        .to_string(),
        bytes,
        blake3: hash,
        ..Default::default()
    };
    match format {
        Format::Jsonl => read_jsonl(path, &mut norm, &mut stats, ctx)?,
        Format::Parquet => read_parquet(path, &mut norm, &mut stats, ctx)?,
    }
    let docs_file = norm.writer.finish()?.into_iter().next().map(|(f, _)| f);
    let events_file = format!("events-{piece:05}.jsonl");
    let mut text = String::new();
    for e in &norm.events {
        text += &serde_json::to_string(e).into_diagnostic()?;
        text.push('\n');
    }
    write_bytes_atomic(&ctx.out_dir.join(&events_file), text.as_bytes())?;
    ctx.progress.inc(1);
    Ok(SourcePart {
        stats,
        docs_file,
        events_file,
    })
}

/// Sharded (`Op::sharding`): a piece is an input file. A shard task reads
/// its files (in parallel) into normalised documents and the events of
/// reading them; the merge replays the events in input order (duplicate
/// ids across files, bad records, shard boundaries every `docs_per_shard`
/// documents), so the artifact is the one a single reader writes.
impl Sharded for Corpus {
    fn pieces(&self, ctx: &OpContext) -> OpResult<usize> {
        let p: CorpusParams = ctx.params()?;
        Ok(resolve_inputs(p.input.paths(), &p.pattern)?.len())
    }

    fn run_part(&self, ctx: &OpContext, range: std::ops::Range<usize>) -> OpResult<()> {
        use rayon::prelude::*;
        let p: CorpusParams = ctx.params()?;
        let inputs = resolve_inputs(p.input.paths(), &p.pattern)?;
        let sources = range
            .into_par_iter()
            .map(|i| read_source(ctx, &p, i, &inputs[i]))
            .collect::<OpResult<Vec<SourcePart>>>()?;
        write_json_atomic(&ctx.out_dir.join("part.json"), &sources)
    }

    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs> {
        let p: CorpusParams = ctx.params()?;
        let (policy, per_shard) = (p.on_error, p.docs_per_shard);
        let mut writer = ShardWriter::new(&ctx.out_dir, "docs", per_shard);
        let mut seen_ids: HashSet<String> = HashSet::new();
        let mut errors = ErrorLog::default();
        let mut chars = 0u64;
        let mut sources: Vec<CorpusSource> = Vec::new();
        for part in parts {
            let listed: Vec<SourcePart> = read_json_file(&part.join("part.json"))?;
            for SourcePart {
                mut stats,
                docs_file,
                events_file,
            } in listed
            {
                let corrupt = |what: &str| miette!("{}: {what}", part.display());
                let events_path = part.join(&events_file);
                let events = std::fs::read_to_string(&events_path)
                    .into_diagnostic()
                    .wrap_err_with(|| format!("cannot read {}", events_path.display()))?;
                let mut docs = docs_file
                    .as_ref()
                    .map(|f| open_decompressed(&part.join(f)))
                    .transpose()?;
                let mut line = String::new();
                for e in events.lines() {
                    let e: Event = serde_json::from_str(e)
                        .map_err(|_| corrupt(&format!("{events_file} is corrupt")))?;
                    match e {
                        Event::Bad { at, what } => policy.record(&mut errors, &at, &what)?,
                        Event::Doc { id, at, chars: n } => {
                            line.clear();
                            let read = docs
                                .as_mut()
                                .map(|d| d.read_line(&mut line))
                                .transpose()
                                .into_diagnostic()?;
                            if read.unwrap_or(0) == 0 {
                                return Err(corrupt("a document file ends early"));
                            }
                            if !seen_ids.insert(id.clone()) {
                                stats.duplicate_ids += 1;
                                policy.record(&mut errors, &at, &format!("duplicate id {id:?}"))?;
                                continue;
                            }
                            stats.documents += 1;
                            chars += n;
                            writer.write_line(line.trim_end_matches('\n'))?;
                        }
                    }
                }
                if stats.documents == 0 && stats.errors == 0 {
                    ctx.log(&format!("{}: no documents (empty shard)", stats.path));
                }
                ctx.log(&format!(
                    "{}: {} documents, {} errors",
                    stats.path, stats.documents, stats.errors
                ));
                sources.push(stats);
            }
        }
        let shards = writer.finish()?;
        let documents: u64 = sources.iter().map(|s| s.documents).sum();
        if documents == 0 {
            return Err(miette!(
                help = "check the input files and text_field; corpus.json lists per-file errors only on success",
                "no documents were read from {} file(s) ({} bad records; first: {})",
                sources.len(),
                errors.count,
                errors.examples.first().map(String::as_str).unwrap_or("none")
            ));
        }
        // The result names its inputs by identity, not by place (see
        // `OpContext::input_name`); the log above keeps the paths.
        name_error_places(&mut errors, ctx);
        for source in &mut sources {
            source.path = ctx.input_place(&source.path);
            source.broken_off = source.broken_off.take().map(|b| ctx.input_place(&b));
        }
        let stats = CorpusStats {
            documents,
            characters: chars,
            empty_text: sources.iter().map(|s| s.empty_text).sum(),
            duplicate_ids: sources.iter().map(|s| s.duplicate_ids).sum(),
            documents_lost: sources.iter().map(|s| s.documents_lost).sum(),
            broken_off_files: sources.iter().filter(|s| s.broken_off.is_some()).count(),
            errors,
            sources,
            shards: ShardCount::list(&shards),
        };
        stats.write(&ctx.out_dir)?;
        let mut out = BTreeMap::new();
        out.insert("stats".to_string(), Value::Path("corpus.json".into()));
        Ok(out)
    }
}
