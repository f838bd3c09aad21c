//! Parameters: loading from (sharded) safetensors, saving, and the index of
//! each layer's tensors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

use crate::config::Config;
use crate::error::{read_to_string, write_atomic, ModelError};

/// Storage dtype of a saved model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    Bf16,
    F16,
}

impl SaveDtype {
    /// Every dtype by its Hugging Face (`torch_dtype`) and mergekit name.
    pub const ALL: [(&'static str, SaveDtype); 3] = [
        ("float32", SaveDtype::F32),
        ("bfloat16", SaveDtype::Bf16),
        ("float16", SaveDtype::F16),
    ];

    /// The dtype called `name` (`float32`, `bfloat16` or `float16`), or an error listing those.
    pub fn parse(name: &str) -> Result<SaveDtype, String> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, d)| *d)
            .ok_or_else(|| {
                format!("unknown dtype `{name}`: expected one of float32, bfloat16, float16")
            })
    }

    /// The Hugging Face name, as written to `torch_dtype`.
    pub fn name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
            SaveDtype::F16 => "float16",
        }
    }

    fn safetensors(self) -> Dtype {
        match self {
            SaveDtype::F32 => Dtype::F32,
            SaveDtype::Bf16 => Dtype::BF16,
            SaveDtype::F16 => Dtype::F16,
        }
    }
}

/// Indices into [`Params::data`] of one decoder layer's tensors.
#[derive(Clone, Debug)]
pub struct LayerIdx {
    pub input_norm: usize,
    pub q_w: usize,
    pub q_b: Option<usize>,
    pub k_w: usize,
    pub k_b: Option<usize>,
    pub v_w: usize,
    pub v_b: Option<usize>,
    pub o_w: usize,
    pub o_b: Option<usize>,
    pub q_norm: Option<usize>,
    pub k_norm: Option<usize>,
    pub post_norm: usize,
    pub gate: usize,
    pub up: usize,
    pub down: usize,
}

/// Where each tensor lives in [`Params::data`]. With tied embeddings
/// `lm_head == embed`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub embed: usize,
    pub layers: Vec<LayerIdx>,
    pub norm: usize,
    pub lm_head: usize,
}

impl Layout {
    /// The layout of `config.param_shapes()`.
    pub fn new(config: &Config) -> Layout {
        let names: HashMap<String, usize> = config
            .param_shapes()
            .into_iter()
            .enumerate()
            .map(|(i, (n, _))| (n, i))
            .collect();
        let idx = |n: &str| names[n];
        let opt = |n: &str| names.get(n).copied();
        let layers = (0..config.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}.");
                LayerIdx {
                    input_norm: idx(&format!("{p}input_layernorm.weight")),
                    q_w: idx(&format!("{p}self_attn.q_proj.weight")),
                    q_b: opt(&format!("{p}self_attn.q_proj.bias")),
                    k_w: idx(&format!("{p}self_attn.k_proj.weight")),
                    k_b: opt(&format!("{p}self_attn.k_proj.bias")),
                    v_w: idx(&format!("{p}self_attn.v_proj.weight")),
                    v_b: opt(&format!("{p}self_attn.v_proj.bias")),
                    o_w: idx(&format!("{p}self_attn.o_proj.weight")),
                    o_b: opt(&format!("{p}self_attn.o_proj.bias")),
                    q_norm: opt(&format!("{p}self_attn.q_norm.weight")),
                    k_norm: opt(&format!("{p}self_attn.k_norm.weight")),
                    post_norm: idx(&format!("{p}post_attention_layernorm.weight")),
                    gate: idx(&format!("{p}mlp.gate_proj.weight")),
                    up: idx(&format!("{p}mlp.up_proj.weight")),
                    down: idx(&format!("{p}mlp.down_proj.weight")),
                }
            })
            .collect();
        let embed = idx("model.embed_tokens.weight");
        Layout {
            embed,
            layers,
            norm: idx("model.norm.weight"),
            lm_head: opt("lm_head.weight").unwrap_or(embed),
        }
    }
}

/// All parameters as f32, in `Config::param_shapes` order.
#[derive(Clone, Debug)]
pub struct Params {
    pub names: Vec<String>,
    pub shapes: Vec<Vec<usize>>,
    pub data: Vec<Vec<f32>>,
}

impl Params {
    /// Zero tensors of the config's shapes (also the gradient buffers).
    pub fn zeros(config: &Config) -> Params {
        let (names, shapes): (Vec<_>, Vec<_>) = config.param_shapes().into_iter().unzip();
        let data = shapes
            .iter()
            .map(|s: &Vec<usize>| vec![0.0f32; s.iter().product()])
            .collect();
        Params {
            names,
            shapes,
            data,
        }
    }

    /// Same names and shapes, all zeros.
    pub fn zeros_like(&self) -> Params {
        Params {
            names: self.names.clone(),
            shapes: self.shapes.clone(),
            data: self.data.iter().map(|d| vec![0.0; d.len()]).collect(),
        }
    }
}

fn view_to_f32(view: &TensorView, name: &str, file: &Path) -> Result<Vec<f32>, ModelError> {
    decode_f32(view.dtype(), view.data())
        .map_err(|e| ModelError::invalid(file, format!("tensor `{name}`: {e}")))
}

/// Decodes little-endian tensor bytes of a floating-point dtype into f32:
/// the one decoder of every safetensors reader (model loading, merges).
/// The 16-bit formats go through the kernels' vectorised conversions.
pub fn decode_f32(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, String> {
    let halves = || -> Vec<u16> {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    };
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => {
            let bits = halves();
            let mut out = vec![0.0f32; bits.len()];
            flow_kernels::cpu::bf16_to_f32(bytemuck::cast_slice(&bits), &mut out);
            out
        }
        Dtype::F16 => {
            let bits = halves();
            let mut out = vec![0.0f32; bits.len()];
            flow_kernels::cpu::f16_to_f32(bytemuck::cast_slice(&bits), &mut out);
            out
        }
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => {
            return Err(format!(
                "dtype {other:?} is not a floating-point type flow reads (F32, BF16, F16, F64)"
            ))
        }
    })
}

/// Encodes f32 values as little-endian `dtype` bytes (F32, BF16 or F16,
/// rounding to nearest even): the one encoder of every safetensors writer.
pub fn encode_f32(dtype: Dtype, values: &[f32]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(values.len() * 4);
    match dtype {
        Dtype::F32 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        Dtype::BF16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_bits().to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes())),
        other => return Err(format!("cannot write dtype {other:?}")),
    }
    Ok(out)
}

/// The safetensors files of a model directory: `model.safetensors`, or the
/// shards listed in `model.safetensors.index.json`.
pub(crate) fn weight_files(model_dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let single = model_dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = model_dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = read_to_string(&index)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(&index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::invalid(&index, "missing object `weight_map`"))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        for f in &files {
            if f.contains("..") || f.contains('/') || f.contains('\\') {
                return Err(ModelError::invalid(
                    &index,
                    format!("shard name `{f}` must be a plain file name"),
                ));
            }
        }
        return Ok(files.into_iter().map(|f| model_dir.join(f)).collect());
    }
    Err(ModelError::invalid(
        model_dir,
        "no weights: expected model.safetensors or model.safetensors.index.json in the model directory",
    ))
}

/// Whether every tensor of the model's weight files is stored in bf16 (what
/// inference with `dtype: auto` keeps; only the files' headers are read).
pub fn stored_in_bf16(model_dir: &Path) -> Result<bool, ModelError> {
    for file in weight_files(model_dir)? {
        let f = std::fs::File::open(&file).map_err(|e| ModelError::io(&file, e))?;
        // SAFETY: the file is only read; flow never writes model files in place (saves go through rename).
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ModelError::io(&file, e))?;
        let (_, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| {
            ModelError::invalid(&file, format!("not a valid safetensors file: {e}"))
        })?;
        if meta
            .tensors()
            .values()
            .any(|info| info.dtype != Dtype::BF16)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Loads every parameter the config asks for, converting to f32 and checking shapes.
pub fn load_params(model_dir: &Path, config: &Config) -> Result<Params, ModelError> {
    let files = weight_files(model_dir)?;
    // Every parameter takes at least two bytes in the files (bf16/f16): a
    // config that implies more than the files can hold is refused before
    // its parameters are allocated.
    let file_bytes: u64 = files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .map(|m| m.len())
                .map_err(|e| ModelError::io(f, e))
        })
        .sum::<Result<u64, ModelError>>()?;
    let implied = config.param_count();
    if implied > file_bytes / 2 {
        return Err(ModelError::invalid(
            &model_dir.join("config.json"),
            format!(
                "config.json implies {implied} parameters, but the weight files hold {file_bytes} bytes \
                 (at most {} parameters): the config does not belong to these weights",
                file_bytes / 2
            ),
        ));
    }
    let mut params = Params::zeros(config);
    let wanted: HashMap<String, usize> = params
        .names
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();
    let mut found = vec![false; params.names.len()];
    for file in &files {
        let f = std::fs::File::open(file).map_err(|e| ModelError::io(file, e))?;
        // SAFETY: the file is only read; flow never writes model files in place (saves go through rename).
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ModelError::io(file, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| ModelError::invalid(file, format!("not a valid safetensors file: {e}")))?;
        for (name, view) in st.tensors() {
            let Some(&i) = wanted.get(&name) else {
                continue;
            };
            let expected = &params.shapes[i];
            if view.shape() != expected.as_slice() {
                return Err(ModelError::invalid(
                    file,
                    format!(
                        "tensor `{name}` has shape {:?} but config.json implies {:?}",
                        view.shape(),
                        expected
                    ),
                ));
            }
            params.data[i] = view_to_f32(&view, &name, file)?;
            found[i] = true;
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        let where_ = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let hint = if params.names[i] == "lm_head.weight" {
            " (config.json says tie_word_embeddings = false)"
        } else {
            ""
        };
        return Err(ModelError::invalid(
            model_dir,
            format!(
                "tensor `{}` is missing from {where_}{hint}",
                params.names[i]
            ),
        ));
    }
    Ok(params)
}

/// Largest shard written by [`save_params`]; bigger models are split with an index.
const SHARD_BYTES: usize = 4 << 30;

/// Writes config.json and the weights (one file, or shards + index) into `out_dir`.
pub fn save_params(
    out_dir: &Path,
    config: &Config,
    params: &Params,
    dtype: SaveDtype,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(out_dir).map_err(|e| ModelError::io(out_dir, e))?;
    let mut raw = config.raw.clone();
    let dtype_name = dtype.name();
    raw.insert("torch_dtype".into(), Value::String(dtype_name.into()));
    if raw.contains_key("dtype") {
        raw.insert("dtype".into(), Value::String(dtype_name.into()));
    }
    let config_text =
        serde_json::to_string_pretty(&Value::Object(raw)).expect("JSON of a JSON map");
    write_atomic(&out_dir.join("config.json"), config_text.as_bytes())?;

    let st_dtype = dtype.safetensors();
    let elem = st_dtype.bitsize() / 8;
    let encoded: Vec<Vec<u8>> = params
        .data
        .iter()
        .map(|d| encode_f32(st_dtype, d).expect("F32, BF16 and F16 are encodable"))
        .collect();
    // group tensors into shards
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0usize;
    for (i, d) in params.data.iter().enumerate() {
        let bytes = d.len() * elem;
        if size > 0 && size + bytes > SHARD_BYTES {
            shards.push(Vec::new());
            size = 0;
        }
        shards.last_mut().expect("non-empty").push(i);
        size += bytes;
    }
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let n = shards.len();
    let mut weight_map = BTreeMap::new();
    for (s, members) in shards.iter().enumerate() {
        let file_name = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", s + 1)
        };
        let views: Vec<(String, TensorView)> = members
            .iter()
            .map(|&i| {
                let v = TensorView::new(st_dtype, params.shapes[i].clone(), &encoded[i])
                    .expect("consistent tensor");
                (params.names[i].clone(), v)
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(metadata.clone())).map_err(|e| {
            ModelError::invalid(&out_dir.join(&file_name), format!("serialising: {e}"))
        })?;
        write_atomic(&out_dir.join(&file_name), &bytes)?;
        for &i in members {
            weight_map.insert(params.names[i].clone(), Value::String(file_name.clone()));
        }
    }
    if n > 1 {
        let total: usize = params.data.iter().map(|d| d.len() * elem).sum();
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_atomic(
            &out_dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)
                .expect("JSON")
                .as_bytes(),
        )?;
    }
    Ok(())
}
