//! The `corpus` op: FineWeb-2 parquet and JSONL in, normalised shards out.

use super::*;

// ---------------------------------------------------------------------------
// The op.

/// The `corpus` op.
pub struct Corpus;

#[derive(Serialize, Deserialize, Default)]
pub(super) struct SourceStats {
    path: String,
    format: String,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    broken_off: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    Jsonl,
    Parquet,
}

pub(super) fn detect_format(path: &Path, forced: &str) -> OpResult<Format> {
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
            return ErrorLog::default().record(self.policy, place, what);
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
        stats: &mut SourceStats,
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

pub(super) fn read_parquet(
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
            return norm.bad(&name, &format!("not a readable parquet file: {e}"));
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
        return norm.bad(
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
            norm.bad(
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
pub(super) fn field_to_json(f: &parquet::record::Field) -> Json {
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
            resources: Resources::ALL_THREADS,
        }
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
    stats: SourceStats,
    /// `None`: the file had no document.
    docs_file: Option<String>,
    events_file: String,
}

/// Reads input `piece` (the file `path`) into the part directory.
fn read_source(ctx: &OpContext, piece: usize, path: &Path) -> OpResult<SourcePart> {
    let format = detect_format(path, ctx.str("format")?)?;
    let mut norm = Normaliser {
        text_field: ctx.str("text_field")?,
        id_field: ctx.str("id_field")?,
        min_chars: ctx.int("min_chars")?.max(0) as usize,
        policy: OnError::from_ctx(ctx)?,
        writer: ShardWriter::new(&ctx.out_dir, &format!("norm-{piece:05}"), u64::MAX),
        events: Vec::new(),
    };
    let (bytes, hash) = hash_file(path)?;
    let mut stats = SourceStats {
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
        Ok(resolve_inputs(ctx.value("input")?, ctx.str("pattern")?)?.len())
    }

    fn run_part(&self, ctx: &OpContext, range: std::ops::Range<usize>) -> OpResult<()> {
        use rayon::prelude::*;
        let inputs = resolve_inputs(ctx.value("input")?, ctx.str("pattern")?)?;
        let sources = range
            .into_par_iter()
            .map(|i| read_source(ctx, i, &inputs[i]))
            .collect::<OpResult<Vec<SourcePart>>>()?;
        write_json_atomic(&ctx.out_dir.join("part.json"), &sources)
    }

    fn merge(&self, ctx: &OpContext, parts: &[PathBuf]) -> OpResult<Outputs> {
        let policy = OnError::from_ctx(ctx)?;
        let per_shard = ctx.int("docs_per_shard")?.max(1) as u64;
        let mut writer = ShardWriter::new(&ctx.out_dir, "docs", per_shard);
        let mut seen_ids: HashSet<String> = HashSet::new();
        let mut errors = ErrorLog::default();
        let mut chars = 0u64;
        let mut sources: Vec<SourceStats> = Vec::new();
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
                        Event::Bad { at, what } => errors.record(policy, &at, &what)?,
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
                                errors.record(policy, &at, &format!("duplicate id {id:?}"))?;
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
