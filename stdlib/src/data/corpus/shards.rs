//! The corpus artifact on disk: reading its shards, writing new ones.

use super::*;

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
    current: Option<
        zstd::stream::write::Encoder<'static, BufWriter<atomic_write_file::AtomicWriteFile>>,
    >,
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
            let path = self.dir.join(self.final_name());
            // The shard appears under its name only once it is complete.
            let file = atomic_write_file::AtomicWriteFile::open(&path)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", path.display()))?;
            let enc = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, file), 3)
                .into_diagnostic()?;
            self.current = Some(enc);
        }
        if let Some(enc) = self.current.as_mut() {
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
        if let Some(enc) = self.current.take() {
            let name = self.final_name();
            let file = enc
                .finish()
                .into_diagnostic()?
                .into_inner()
                .map_err(|e| miette!("cannot write {name}: {}", e.error()))?;
            file.commit()
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot write {name}"))?;
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
    let text = serde_json::to_string_pretty(value).into_diagnostic()?;
    write_bytes_atomic(path, (text + "\n").as_bytes())
}

/// The one way the ops write a file whole: atomic-write-file's temporary
/// file, synced and renamed over the target. (Inside an artifact's build
/// directory this only matters for durability: the engine renames the
/// whole directory into the store once the op returned.)
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> OpResult<()> {
    let write = || -> std::io::Result<()> {
        let mut f = atomic_write_file::AtomicWriteFile::open(path)?;
        f.write_all(bytes)?;
        f.commit()
    };
    write()
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))
}

/// Reads a JSON file an op wrote (a shard task's part file, say).
pub fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> OpResult<T> {
    let text = std::fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .into_diagnostic()
        .wrap_err_with(|| format!("{} is not what this op wrote", path.display()))
}

/// Puts the file `from` (a shard task's output) at `to` without changing
/// `from`: a hard link where the file system has them, else a copy. A
/// merge that failed half-way can then run again on the same parts.
pub fn link_or_copy(from: &Path, to: &Path) -> OpResult<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot copy {} to {}", from.display(), to.display()))
}
