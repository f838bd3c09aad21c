//! Streaming access to the safetensors of Hugging Face model directories, for
//! the merge ops: tensors are read one at a time from memory-mapped files and
//! written into size-limited shards, so a merge never holds two whole models.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use miette::{miette, IntoDiagnostic, WrapErr};
use safetensors::{Dtype, SafeTensors, View};

use crate::op::OpResult;

/// Default shard size of merged models (bytes), as Hugging Face's `save_pretrained`.
pub const DEFAULT_SHARD_BYTES: u64 = 2_000_000_000;

/// One model directory's safetensors, memory-mapped; tensors are decoded on demand.
pub struct ModelTensors {
    dir: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// Tensor name → (file index, dtype, shape).
    index: BTreeMap<String, (usize, Dtype, Vec<usize>)>,
}

impl ModelTensors {
    /// Opens `model.safetensors`, or every shard that `model.safetensors.index.json` lists.
    pub fn open(dir: &Path) -> OpResult<ModelTensors> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let file_names: Vec<String> = if index_path.is_file() {
            let text = fs::read_to_string(&index_path)
                .into_diagnostic()
                .wrap_err_with(|| format!("reading {}", index_path.display()))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .into_diagnostic()
                .wrap_err_with(|| format!("parsing {}", index_path.display()))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| miette!("{}: no `weight_map` object", index_path.display()))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            names.sort();
            names.dedup();
            names
        } else if single.is_file() {
            vec!["model.safetensors".to_owned()]
        } else {
            return Err(miette!(
                help = "a model directory holds model.safetensors or model.safetensors.index.json with its shards",
                "{}: no safetensors weights found",
                dir.display()
            ));
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for (i, name) in file_names.iter().enumerate() {
            let path = dir.join(name);
            let file = fs::File::open(&path)
                .into_diagnostic()
                .wrap_err_with(|| format!("opening {}", path.display()))?;
            // SAFETY: the file is only read; model directories are not modified while merging.
            let mmap = unsafe { Mmap::map(&file) }
                .into_diagnostic()
                .wrap_err_with(|| format!("mapping {}", path.display()))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| miette!("{}: not a valid safetensors file: {e}", path.display()))?;
            for (tname, view) in st.iter() {
                index.insert(tname.to_owned(), (i, view.dtype(), view.shape().to_vec()));
            }
            files.push((path, mmap));
        }
        Ok(ModelTensors {
            dir: dir.to_owned(),
            files,
            index,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape and stored dtype of a tensor.
    pub fn info(&self, name: &str) -> Option<(Dtype, &[usize])> {
        self.index.get(name).map(|(_, d, s)| (*d, s.as_slice()))
    }

    /// A tensor converted to f32 (F32, BF16, F16 and F64 are accepted).
    pub fn read_f32(&self, name: &str) -> OpResult<Vec<f32>> {
        let (file_idx, _, _) = self
            .index
            .get(name)
            .ok_or_else(|| miette!("{}: no tensor `{name}`", self.dir.display()))?;
        let (path, mmap) = &self.files[*file_idx];
        let st = SafeTensors::deserialize(mmap)
            .map_err(|e| miette!("{}: not a valid safetensors file: {e}", path.display()))?;
        let view = st
            .tensor(name)
            .map_err(|e| miette!("{}: {e}", path.display()))?;
        flow_model::weights::decode_f32(view.dtype(), view.data())
            .map_err(|e| miette!("{}: tensor `{name}`: {e}", path.display()))
    }
}

/// A tensor ready to be written.
struct OwnedTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes tensors into shards of at most `max_bytes` each (a larger single
/// tensor gets a shard of its own), named as Hugging Face names them.
pub struct ShardWriter {
    out_dir: PathBuf,
    max_bytes: u64,
    pending: Vec<(String, OwnedTensor)>,
    pending_bytes: u64,
    /// Temporary shard files and the tensor names in each.
    written: Vec<(PathBuf, Vec<String>)>,
    total_bytes: u64,
}

impl ShardWriter {
    pub fn new(out_dir: &Path, max_bytes: u64) -> ShardWriter {
        ShardWriter {
            out_dir: out_dir.to_owned(),
            max_bytes: max_bytes.max(1),
            pending: Vec::new(),
            pending_bytes: 0,
            written: Vec::new(),
            total_bytes: 0,
        }
    }

    /// Adds a tensor; flushes the current shard first when it would overflow.
    pub fn add(
        &mut self,
        name: &str,
        dtype: Dtype,
        shape: &[usize],
        values: &[f32],
    ) -> OpResult<()> {
        let bytes = flow_model::weights::encode_f32(dtype, values)
            .map_err(|e| miette!("tensor `{name}`: {e}"))?;
        let len = bytes.len() as u64;
        if !self.pending.is_empty() && self.pending_bytes + len > self.max_bytes {
            self.flush()?;
        }
        self.pending_bytes += len;
        self.total_bytes += len;
        self.pending.push((
            name.to_owned(),
            OwnedTensor {
                dtype,
                shape: shape.to_vec(),
                bytes,
            },
        ));
        Ok(())
    }

    fn flush(&mut self) -> OpResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = self
            .out_dir
            .join(format!(".shard-{}.safetensors.tmp", self.written.len()));
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_owned(), "pt".to_owned());
        let items: Vec<(&str, &OwnedTensor)> =
            self.pending.iter().map(|(n, t)| (n.as_str(), t)).collect();
        safetensors::serialize_to_file(items, Some(meta), &path)
            .map_err(|e| miette!("writing {}: {e}", path.display()))?;
        let names = self.pending.drain(..).map(|(n, _)| n).collect();
        self.pending_bytes = 0;
        self.written.push((path, names));
        Ok(())
    }

    /// Writes the last shard, gives every shard its final name and, when
    /// there is more than one, writes `model.safetensors.index.json`.
    /// Returns the final file names.
    pub fn finish(mut self) -> OpResult<Vec<String>> {
        self.flush()?;
        let n = self.written.len();
        let mut names = Vec::new();
        let mut weight_map = serde_json::Map::new();
        for (i, (tmp, tensors)) in self.written.iter().enumerate() {
            let final_name = if n == 1 {
                "model.safetensors".to_owned()
            } else {
                format!("model-{:05}-of-{:05}.safetensors", i + 1, n)
            };
            fs::rename(tmp, self.out_dir.join(&final_name))
                .into_diagnostic()
                .wrap_err_with(|| format!("renaming {}", tmp.display()))?;
            for t in tensors {
                weight_map.insert(t.clone(), serde_json::Value::String(final_name.clone()));
            }
            names.push(final_name);
        }
        if n > 1 {
            let mut sorted: Vec<(String, serde_json::Value)> = weight_map.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            let index = serde_json::json!({
                "metadata": {"total_size": self.total_bytes},
                "weight_map": serde_json::Map::from_iter(sorted),
            });
            write_json(&self.out_dir.join("model.safetensors.index.json"), &index)?;
        }
        Ok(names)
    }
}

/// Writes pretty JSON through a temporary file and a rename.
pub fn write_json(path: &Path, value: &serde_json::Value) -> OpResult<()> {
    let text = serde_json::to_string_pretty(value).into_diagnostic()?;
    write_atomic(path, text.as_bytes())
}

/// Writes bytes through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> OpResult<()> {
    crate::data::corpus::write_bytes_atomic(path, bytes)
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> OpResult<serde_json::Value> {
    let text = fs::read_to_string(path)
        .into_diagnostic()
        .wrap_err_with(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        miette!(
            "{}:{}:{}: invalid JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// Tokenizer files that `flow_model::copy_tokenizer_files` does not copy
/// (SentencePiece and byte-level BPE vocabularies of older models).
const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// Copies the extra tokenizer files that exist in `from` to `to`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> OpResult<()> {
    for name in TOKENIZER_FILES {
        let src = from.join(name);
        if src.is_file() {
            let bytes = fs::read(&src)
                .into_diagnostic()
                .wrap_err_with(|| format!("reading {}", src.display()))?;
            write_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}
