//! GGUF import: turns a llama.cpp GGUF file (Llama or Qwen2 architecture,
//! byte-level BPE vocabulary) into a Hugging Face model directory —
//! config.json, model.safetensors (f32), tokenizer.json,
//! tokenizer_config.json, special_tokens_map.json, generation_config.json —
//! that flow's runtime and HF transformers both load.
//!
//! Quantised tensors (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, F16, BF16, F32) are
//! dequantised to f32. llama.cpp's converter permutes the rows of the query
//! and key projections of Llama-architecture models (to interleave the
//! rotary halves); the import undoes that so the weights follow HF's
//! rotate-half convention again.

mod dequant;
mod hf;
mod reader;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use reader::{GgufFile, TensorInfo, Value};

/// What went wrong while importing; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{path}: cannot read GGUF file: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a well-formed GGUF file (truncated, bad magic,
    /// unknown version, tensor data out of bounds, ...).
    #[error("{path}: malformed GGUF: {message}")]
    Malformed { path: PathBuf, message: String },
    /// A well-formed file using something the importer does not handle
    /// (architecture, quantisation type, tokenizer model, tensor).
    #[error("{path}: unsupported GGUF content: {message}")]
    Unsupported { path: PathBuf, message: String },
    /// Writing the output directory failed.
    #[error("{path}: cannot write import output: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What an import produced (the `import_gguf` op writes it to
/// `import.json`, the files aside).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImportSummary {
    /// `general.architecture` (llama, qwen2).
    pub architecture: String,
    /// The HF class written to config.json (LlamaForCausalLM, ...).
    pub hf_architecture: String,
    /// Number of tensors written to model.safetensors.
    pub tensors: usize,
    /// Total number of parameters written.
    pub parameters: u64,
    /// Tensor count per GGML type name in the source file.
    pub source_types: BTreeMap<String, usize>,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// True when the file had no `output.weight` (lm_head tied to the embedding).
    pub tied_embeddings: bool,
    /// The files written, in out_dir.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

/// A tensor ready to be written: HF name, HF shape, f32 values.
pub(crate) struct HfTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Imports `input` (a GGUF file) into the HF model directory `out_dir`
/// (created if needed; existing files of the same names are replaced
/// atomically).
pub fn import_gguf(input: &Path, out_dir: &Path) -> Result<ImportSummary, GgufError> {
    let path = input.to_path_buf();
    let malformed = |message: String| GgufError::Malformed {
        path: path.clone(),
        message,
    };
    let unsupported = |message: String| GgufError::Unsupported {
        path: path.clone(),
        message,
    };
    let file = File::open(input).map_err(|source| GgufError::Io {
        path: path.clone(),
        source,
    })?;
    // SAFETY: the map is read-only and lives only during this call; a file
    // changed underneath would give wrong numbers, not memory unsafety in
    // our code, which bounds-checks every access.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| GgufError::Io {
        path: path.clone(),
        source,
    })?;
    let bytes: &[u8] = &map;
    let gguf = reader::parse(bytes).map_err(malformed)?;
    let lift = |e: hf::MetaError| match e {
        hf::MetaError::Missing(m) => malformed(m),
        hf::MetaError::Unsupported(m) => unsupported(m),
        hf::MetaError::Io(p, source) => GgufError::Output { path: p, source },
    };
    let hp = hf::Hyper::from_metadata(&gguf.metadata).map_err(lift)?;

    let mut source_types: BTreeMap<String, usize> = BTreeMap::new();
    let mut tensors = Vec::with_capacity(gguf.tensors.len());
    for info in &gguf.tensors {
        let tname = dequant::type_name(info.ggml_type);
        *source_types.entry(tname.clone()).or_default() += 1;
        let (bs, ts) = dequant::block_layout(info.ggml_type).ok_or_else(|| {
            unsupported(format!(
                "tensor `{}` has quantisation type {tname}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K",
                info.name
            ))
        })?;
        let n = info
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= (1u64 << 40))
            .ok_or_else(|| {
                malformed(format!(
                    "tensor `{}` has implausible dimensions {:?}",
                    info.name, info.dims
                ))
            })? as usize;
        if (info.dims[0] as usize).checked_rem(bs) != Some(0) {
            return Err(malformed(format!(
                "tensor `{}`: row length {} is not a multiple of the {tname} block size {bs}",
                info.name, info.dims[0]
            )));
        }
        let nbytes = (n / bs * ts) as u64;
        let start = gguf.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(nbytes));
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if e <= bytes.len() as u64 => (s as usize, e as usize),
            _ => {
                return Err(malformed(format!(
                    "tensor `{}` data out of bounds: offset {} + {nbytes} bytes after the data start {} exceeds the file size {} (truncated file?)",
                    info.name,
                    info.offset,
                    gguf.data_start,
                    bytes.len()
                )))
            }
        };
        let hf_name = hf::hf_tensor_name(&info.name, &hp.arch).ok_or_else(|| {
            unsupported(format!(
                "tensor `{}` has no Hugging Face equivalent for architecture {}",
                info.name, hp.arch
            ))
        })?;
        let mut data = vec![0.0f32; n];
        dequant::dequantize(info.ggml_type, &bytes[start..end], &mut data);
        let shape: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        if hp.arch == "llama" {
            let heads = if info.name.ends_with("attn_q.weight")
                || info.name.ends_with("attn_q.bias")
            {
                Some(hp.heads)
            } else if info.name.ends_with("attn_k.weight") || info.name.ends_with("attn_k.bias") {
                Some(hp.kv_heads)
            } else {
                None
            };
            if let Some(h) = heads {
                data = unpermute_rows(&data, shape[0], h)
                    .map_err(|m| malformed(format!("tensor `{}`: {m}", info.name)))?;
            }
        }
        tensors.push(HfTensor {
            name: hf_name,
            shape,
            data,
        });
    }
    drop(map);

    let written = hf::write_model_dir(&gguf.metadata, &hp, tensors, out_dir).map_err(lift)?;
    Ok(ImportSummary {
        architecture: hp.arch.clone(),
        hf_architecture: hp.hf_class().to_string(),
        tensors: written.tensors,
        parameters: written.parameters,
        source_types,
        vocab_size: written.vocab_size,
        tied_embeddings: written.tied,
        files: written.files,
    })
}

/// Inverts llama.cpp's `permute` of Q/K rows: GGUF row (h, i, c) holds HF
/// row (h, c, i) for head h, rotary half c ∈ {0, 1}, i < head_dim/2.
fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Result<Vec<f32>, String> {
    if heads == 0
        || rows == 0
        || rows.checked_rem(2 * heads) != Some(0)
        || !data.len().is_multiple_of(rows)
    {
        return Err(format!(
            "{rows} rows cannot be split into {heads} heads of two rotary halves"
        ));
    }
    let cols = data.len() / rows;
    let half = rows / heads / 2;
    let mut out = vec![0.0f32; data.len()];
    for h in 0..heads {
        for c in 0..2 {
            for i in 0..half {
                let hf_row = h * 2 * half + c * half + i;
                let gg_row = h * 2 * half + 2 * i + c;
                out[hf_row * cols..(hf_row + 1) * cols]
                    .copy_from_slice(&data[gg_row * cols..(gg_row + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
