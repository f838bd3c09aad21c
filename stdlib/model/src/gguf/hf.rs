//! The Hugging Face side of the import: tensor names, config.json,
//! generation_config.json and the tokenizer files rebuilt from GGUF
//! metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value as Json};

use super::reader::Value;
use super::HfTensor;

/// Problems found while interpreting metadata or writing files.
pub(crate) enum MetaError {
    /// A required key is absent or has the wrong type.
    Missing(String),
    /// Valid but not handled by this importer.
    Unsupported(String),
    /// Writing an output file failed.
    Io(PathBuf, std::io::Error),
}

/// Model hyper-parameters from `<arch>.*` keys.
pub(crate) struct Hyper {
    pub arch: String,
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    pub context: usize,
}

fn get_u64(md: &BTreeMap<String, Value>, key: &str) -> Result<Option<u64>, MetaError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            MetaError::Missing(format!(
                "metadata `{key}` should be an unsigned integer, found {v:?}"
            ))
        }),
    }
}

fn req_u64(md: &BTreeMap<String, Value>, key: &str) -> Result<usize, MetaError> {
    get_u64(md, key)?
        .map(|v| v as usize)
        .ok_or_else(|| MetaError::Missing(format!("required metadata `{key}` is missing")))
}

fn get_f64(md: &BTreeMap<String, Value>, key: &str) -> Result<Option<f64>, MetaError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            MetaError::Missing(format!("metadata `{key}` should be a number, found {v:?}"))
        }),
    }
}

fn get_str<'a>(md: &'a BTreeMap<String, Value>, key: &str) -> Result<Option<&'a str>, MetaError> {
    match md.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_str()
            .map(Some)
            .ok_or_else(|| MetaError::Missing(format!("metadata `{key}` should be a string"))),
    }
}

/// f32 metadata widened by its shortest decimal (1e-5f32 → 1e-5, not 9.99999974e-6).
fn decimal(x: f64) -> f64 {
    (x as f32).to_string().parse().unwrap_or(x)
}

impl Hyper {
    pub(crate) fn from_metadata(md: &BTreeMap<String, Value>) -> Result<Hyper, MetaError> {
        let arch = get_str(md, "general.architecture")?
            .ok_or_else(|| {
                MetaError::Missing("required metadata `general.architecture` is missing".into())
            })?
            .to_string();
        if arch != "llama" && arch != "qwen2" {
            return Err(MetaError::Unsupported(format!(
                "architecture `{arch}`; supported: llama, qwen2"
            )));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let hidden = req_u64(md, &k("embedding_length"))?;
        let heads = req_u64(md, &k("attention.head_count"))?;
        if heads == 0 || hidden == 0 {
            return Err(MetaError::Missing(
                "embedding_length and head_count must be positive".into(),
            ));
        }
        let kv_heads = get_u64(md, &k("attention.head_count_kv"))?.map_or(heads, |v| v as usize);
        if heads.checked_rem(kv_heads) != Some(0) {
            return Err(MetaError::Missing(format!(
                "head_count {heads} is not a multiple of head_count_kv {kv_heads}"
            )));
        }
        let head_dim =
            get_u64(md, &k("attention.key_length"))?.map_or(hidden / heads, |v| v as usize);
        if let Some(t) = get_str(md, &k("rope.scaling.type"))? {
            if t != "none" {
                return Err(MetaError::Unsupported(format!("rope scaling `{t}`")));
            }
        }
        Ok(Hyper {
            layers: req_u64(md, &k("block_count"))?,
            hidden,
            intermediate: req_u64(md, &k("feed_forward_length"))?,
            heads,
            kv_heads,
            head_dim,
            rope_theta: decimal(get_f64(md, &k("rope.freq_base"))?.unwrap_or(10000.0)),
            rms_eps: decimal(
                get_f64(md, &k("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
                    MetaError::Missing(format!(
                        "required metadata `{}` is missing",
                        k("attention.layer_norm_rms_epsilon")
                    ))
                })?,
            ),
            context: get_u64(md, &k("context_length"))?.map_or(2048, |v| v as usize),
            arch,
        })
    }

    pub(crate) fn hf_class(&self) -> &'static str {
        match self.arch.as_str() {
            "qwen2" => "Qwen2ForCausalLM",
            _ => "LlamaForCausalLM",
        }
    }
}

/// GGUF tensor name → HF name (None for tensors without an equivalent).
pub(crate) fn hf_tensor_name(name: &str, _arch: &str) -> Option<String> {
    let (base, suffix) = name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let global = match base {
        "token_embd" => Some("model.embed_tokens"),
        "output_norm" => Some("model.norm"),
        "output" => Some("lm_head"),
        _ => None,
    };
    if let Some(g) = global {
        return Some(format!("{g}.{suffix}"));
    }
    let rest = base.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// What [`write_model_dir`] wrote.
pub(crate) struct Written {
    pub tensors: usize,
    pub parameters: u64,
    pub vocab_size: usize,
    pub tied: bool,
    pub files: Vec<PathBuf>,
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, MetaError> {
    let target = dir.join(name);
    crate::error::write_atomic(&target, bytes).map_err(|e| match e {
        crate::ModelError::Io { source, .. } => MetaError::Io(target.clone(), source),
        other => MetaError::Missing(other.to_string()),
    })?;
    Ok(target)
}

fn pretty(v: &Json) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap_or_default();
    s.push(b'\n');
    s
}

/// Regex of the Llama 3 pre-tokenizer (llama.cpp `llama-bpe`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Regex of the Qwen2 pre-tokenizer (single digits).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// (normalizer, pre_tokenizer, ignore_merges) for a `tokenizer.ggml.pre` value.
fn pre_tokenizer(pre: &str) -> Result<(Json, Json, bool), MetaError> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |re: &str| json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false});
    Ok(match pre {
        // GPT-2's regex inside ByteLevel
        "default" | "gpt2" | "gpt-2" => (Json::Null, byte_level(true), false),
        // digits one by one, then GPT-2's regex (SmolLM, StarCoder)
        "smollm" | "starcoder" | "refact" => (
            Json::Null,
            json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            false,
        ),
        "llama-bpe" | "llama3" | "smaug-bpe" => (
            Json::Null,
            json!({"type": "Sequence", "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]}),
            true,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            json!({"type": "NFC"}),
            json!({"type": "Sequence", "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]}),
            false,
        ),
        other => {
            return Err(MetaError::Unsupported(format!(
                "tokenizer pre-tokenizer `{other}`; supported: default, gpt2, smollm, starcoder, llama-bpe, qwen2"
            )))
        }
    })
}

/// Strings of an array-of-strings metadata value.
fn str_array<'a>(
    md: &'a BTreeMap<String, Value>,
    key: &str,
) -> Result<Option<Vec<&'a str>>, MetaError> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let arr = v
        .as_array()
        .ok_or_else(|| MetaError::Missing(format!("metadata `{key}` should be an array")))?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .ok_or_else(|| MetaError::Missing(format!("metadata `{key}` should hold strings")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The tokenizer files; returns (tokenizer.json, tokenizer_config.json, special_tokens_map.json, special ids).
struct TokenizerFiles {
    tokenizer: Json,
    config: Json,
    special_map: Json,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
}

fn build_tokenizer(
    md: &BTreeMap<String, Value>,
    context: usize,
) -> Result<TokenizerFiles, MetaError> {
    let model = get_str(md, "tokenizer.ggml.model")?.unwrap_or("gpt2");
    if model != "gpt2" {
        return Err(MetaError::Unsupported(format!(
            "tokenizer model `{model}`; only byte-level BPE (`gpt2`) vocabularies are supported"
        )));
    }
    let tokens = str_array(md, "tokenizer.ggml.tokens")?.ok_or_else(|| {
        MetaError::Missing("required metadata `tokenizer.ggml.tokens` is missing".into())
    })?;
    let merges = str_array(md, "tokenizer.ggml.merges")?.unwrap_or_default();
    let types: Vec<i64> = match md
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        Some(a) => a
            .iter()
            .map(|x| match *x {
                Value::I32(v) => v as i64,
                ref o => o.as_u64().map_or(1, |v| v as i64),
            })
            .collect(),
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(MetaError::Missing(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.len(),
            tokens.len()
        )));
    }
    let id = |key: &str| -> Result<Option<u32>, MetaError> {
        match get_u64(md, key)? {
            Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
            Some(v) => Err(MetaError::Missing(format!(
                "`{key}` = {v} is outside the {}-token vocabulary",
                tokens.len()
            ))),
            None => Ok(None),
        }
    };
    let (bos, eos, unk, pad) = (
        id("tokenizer.ggml.bos_token_id")?,
        id("tokenizer.ggml.eos_token_id")?,
        id("tokenizer.ggml.unknown_token_id")?,
        id("tokenizer.ggml.padding_token_id")?,
    );
    let add_bos = md
        .get("tokenizer.ggml.add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let add_eos = md
        .get("tokenizer.ggml.add_eos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let pre = get_str(md, "tokenizer.ggml.pre")?.unwrap_or("default");
    let (normalizer, pre_tok, ignore_merges) = pre_tokenizer(pre)?;

    let mut vocab = Map::new();
    for (i, t) in tokens.iter().enumerate() {
        vocab.entry(t.to_string()).or_insert(json!(i));
    }
    // Control tokens (type 3) are special added tokens; user-defined (4)
    // are added tokens that decode as text. The special ids count as
    // control whatever their type.
    let specials: Vec<u32> = [bos, eos, unk, pad].into_iter().flatten().collect();
    let mut added = Vec::new();
    let mut added_decoder = Map::new();
    for (i, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        let special = ty == 3 || specials.contains(&(i as u32));
        if special || ty == 4 {
            added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": !special, "special": special}));
            added_decoder.insert(
                i.to_string(),
                json!({"content": t, "lstrip": false, "normalized": !special, "rstrip": false, "single_word": false, "special": special}),
            );
        }
    }
    let tok_str = |i: Option<u32>| i.map(|i| tokens[i as usize].to_string());
    let post = match (add_bos, bos) {
        (true, Some(b)) => {
            let bt = tokens[b as usize];
            json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bt, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bt, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bt, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bt: {"id": bt, "ids": [b], "tokens": [bt]}}
            })
        }
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tok,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        }
    });
    let mut config = Map::new();
    config.insert("add_bos_token".into(), json!(add_bos));
    config.insert("add_eos_token".into(), json!(add_eos));
    config.insert("added_tokens_decoder".into(), Json::Object(added_decoder));
    config.insert("bos_token".into(), json!(tok_str(bos)));
    config.insert("eos_token".into(), json!(tok_str(eos)));
    config.insert("pad_token".into(), json!(tok_str(pad)));
    config.insert("unk_token".into(), json!(tok_str(unk)));
    if let Some(t) = get_str(md, "tokenizer.chat_template")? {
        config.insert("chat_template".into(), json!(t));
    }
    config.insert("clean_up_tokenization_spaces".into(), json!(false));
    config.insert("model_max_length".into(), json!(context));
    config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    let mut special_map = Map::new();
    for (k, v) in [
        ("bos_token", bos),
        ("eos_token", eos),
        ("pad_token", pad),
        ("unk_token", unk),
    ] {
        if let Some(s) = tok_str(v) {
            special_map.insert(k.into(), json!(s));
        }
    }
    Ok(TokenizerFiles {
        tokenizer,
        config: Json::Object(config),
        special_map: Json::Object(special_map),
        bos,
        eos,
        pad,
    })
}

/// Writes the whole HF directory.
pub(crate) fn write_model_dir(
    md: &BTreeMap<String, Value>,
    hp: &Hyper,
    tensors: Vec<HfTensor>,
    out_dir: &Path,
) -> Result<Written, MetaError> {
    let embed = tensors
        .iter()
        .find(|t| t.name == "model.embed_tokens.weight")
        .ok_or_else(|| MetaError::Missing("the file has no `token_embd.weight` tensor".into()))?;
    if embed.shape.len() != 2 || embed.shape[1] != hp.hidden {
        return Err(MetaError::Missing(format!(
            "token_embd.weight has shape {:?}, expected [vocab, {}]",
            embed.shape, hp.hidden
        )));
    }
    let vocab_size = embed.shape[0];
    let tied = !tensors.iter().any(|t| t.name == "lm_head.weight");
    for l in 0..hp.layers {
        let want = format!("model.layers.{l}.self_attn.q_proj.weight");
        if !tensors.iter().any(|t| t.name == want) {
            return Err(MetaError::Missing(format!(
                "block {l} of {} has no attn_q.weight",
                hp.layers
            )));
        }
    }
    // Two GGUF tensors of one name (or two that map to one HF name) would
    // make the safetensors writer panic; the file is malformed.
    let mut names = std::collections::HashSet::new();
    if let Some(t) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
        return Err(MetaError::Missing(format!(
            "tensor `{}` appears twice",
            t.name
        )));
    }
    let tok = build_tokenizer(md, hp.context)?;
    std::fs::create_dir_all(out_dir).map_err(|e| MetaError::Io(out_dir.to_path_buf(), e))?;

    let parameters: u64 = tensors.iter().map(|t| t.data.len() as u64).sum();
    let n_tensors = tensors.len();
    let mut files = Vec::new();
    {
        let bufs: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .into_iter()
            .map(|t| {
                let mut b = Vec::with_capacity(t.data.len() * 4);
                for v in &t.data {
                    b.extend_from_slice(&v.to_le_bytes());
                }
                (t.name, t.shape, b)
            })
            .collect();
        let views = bufs
            .iter()
            .map(|(n, s, b)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| MetaError::Missing(format!("tensor `{n}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let bytes = safetensors::tensor::serialize(views, Some(meta))
            .map_err(|e| MetaError::Missing(format!("cannot serialise safetensors: {e}")))?;
        files.push(write_atomic(out_dir, "model.safetensors", &bytes)?);
    }

    let eos_json = tok.eos.map_or(Json::Null, |e| json!(e));
    let bos_json = tok.bos.map_or(Json::Null, |b| json!(b));
    let mut cfg = json!({
        "architectures": [hp.hf_class()],
        "model_type": hp.arch,
        "vocab_size": vocab_size,
        "hidden_size": hp.hidden,
        "intermediate_size": hp.intermediate,
        "num_hidden_layers": hp.layers,
        "num_attention_heads": hp.heads,
        "num_key_value_heads": hp.kv_heads,
        "head_dim": hp.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": hp.context,
        "rms_norm_eps": hp.rms_eps,
        "rope_theta": hp.rope_theta,
        "rope_scaling": null,
        "tie_word_embeddings": tied,
        "bos_token_id": bos_json,
        "eos_token_id": eos_json,
        "torch_dtype": "float32",
        "initializer_range": 0.02,
        "use_cache": true,
    });
    if let Json::Object(m) = &mut cfg {
        match hp.arch.as_str() {
            "qwen2" => {
                m.insert("use_sliding_window".into(), json!(false));
                m.insert("sliding_window".into(), json!(hp.context));
                m.insert("max_window_layers".into(), json!(hp.layers));
                m.insert("attention_dropout".into(), json!(0.0));
            }
            _ => {
                m.insert("attention_bias".into(), json!(false));
                m.insert("attention_dropout".into(), json!(0.0));
                m.insert("mlp_bias".into(), json!(false));
                m.insert("pretraining_tp".into(), json!(1));
            }
        }
    }
    files.push(write_atomic(out_dir, "config.json", &pretty(&cfg))?);
    let mut gen = Map::new();
    gen.insert("_from_model_config".into(), json!(true));
    if let Some(b) = tok.bos {
        gen.insert("bos_token_id".into(), json!(b));
    }
    if let Some(e) = tok.eos {
        gen.insert("eos_token_id".into(), json!(e));
    }
    if let Some(p) = tok.pad {
        gen.insert("pad_token_id".into(), json!(p));
    }
    files.push(write_atomic(
        out_dir,
        "generation_config.json",
        &pretty(&Json::Object(gen)),
    )?);
    files.push(write_atomic(
        out_dir,
        "tokenizer.json",
        &pretty(&tok.tokenizer),
    )?);
    files.push(write_atomic(
        out_dir,
        "tokenizer_config.json",
        &pretty(&tok.config),
    )?);
    files.push(write_atomic(
        out_dir,
        "special_tokens_map.json",
        &pretty(&tok.special_map),
    )?);
    Ok(Written {
        tensors: n_tensors,
        parameters,
        vocab_size,
        tied,
        files,
    })
}
