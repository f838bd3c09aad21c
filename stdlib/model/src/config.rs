//! `config.json` of a Hugging Face causal LM directory.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{read_to_string, ModelError};

/// The supported architectures (the `architectures[0]` of config.json).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `Qwen2ForCausalLM` (Qwen2, Qwen2.5): bias on q/k/v.
    Qwen2,
    /// `Qwen3ForCausalLM`: per-head RMSNorm on q and k before RoPE, explicit head_dim.
    Qwen3,
    /// `LlamaForCausalLM` (Llama, SmolLM2).
    Llama,
    /// `MistralForCausalLM`: optional sliding-window attention.
    Mistral,
}

impl Arch {
    /// The HF class name written into `architectures`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
        }
    }
}

/// The model hyper-parameters flow needs, read from config.json (and
/// generation_config.json for extra EOS ids).
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// The sliding window of the layers that use one (Mistral; Qwen2 with use_sliding_window).
    pub sliding_window: Option<usize>,
    /// Per layer: the attention window, `None` for full attention.
    pub layer_windows: Vec<Option<usize>>,
    /// Bias on the q/k/v projections (always for Qwen2; `attention_bias` for Llama/Mistral/Qwen3).
    pub attention_bias: bool,
    /// Bias on o_proj (Llama-style `attention_bias: true` puts one there too; Qwen2 never).
    pub o_bias: bool,
    /// Per-head RMSNorm of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// The parsed config.json, kept so `save` writes back every field it did not interpret.
    pub raw: Map<String, Value>,
}

/// Bounds far above any released model (Llama-3.1-405B: 126 layers,
/// hidden 16,384, intermediate 53,248; Qwen's vocabulary 151,936) that keep
/// every size computed from a config inside 64 bits.
const MAX_LAYERS: usize = 1 << 12;
const MAX_DIM: usize = 1 << 20;
const MAX_VOCAB: usize = 1 << 24;

fn get_usize(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<usize, ModelError> {
    match obj.get(key) {
        Some(Value::Number(n)) => n.as_u64().map(|v| v as usize).ok_or_else(|| {
            ModelError::invalid(
                path,
                format!("`{key}` must be a non-negative integer, got {n}"),
            )
        }),
        Some(other) => Err(ModelError::invalid(
            path,
            format!("`{key}` must be an integer, got {other}"),
        )),
        None => Err(ModelError::invalid(path, format!("missing field `{key}`"))),
    }
}

fn opt_usize(
    obj: &Map<String, Value>,
    key: &str,
    path: &Path,
) -> Result<Option<usize>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => get_usize(obj, key, path).map(Some),
    }
}

fn opt_f64(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<f64>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ModelError::invalid(
            path,
            format!("`{key}` must be a number, got {other}"),
        )),
    }
}

fn opt_bool(obj: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<bool>, ModelError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ModelError::invalid(
            path,
            format!("`{key}` must be true or false, got {other}"),
        )),
    }
}

/// `eos_token_id` may be an integer or a list of integers.
fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl Config {
    /// Reads `model_dir/config.json` (and `generation_config.json` when present).
    pub fn load(model_dir: &Path) -> Result<Config, ModelError> {
        let path = model_dir.join("config.json");
        let text = read_to_string(&path)?;
        let raw: Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(&path, format!("not valid JSON: {e}")))?;
        let mut config = Config::from_json(raw, &path)?;
        let gen_path = model_dir.join("generation_config.json");
        if let Ok(gen_text) = std::fs::read_to_string(&gen_path) {
            if let Ok(gen) = serde_json::from_str::<Map<String, Value>>(&gen_text) {
                for id in token_ids(gen.get("eos_token_id")) {
                    if !config.eos_token_ids.contains(&id) {
                        config.eos_token_ids.push(id);
                    }
                }
            }
        }
        Ok(config)
    }

    /// Interprets a parsed config.json; `path` is only used in error messages.
    pub fn from_json(raw: Map<String, Value>, path: &Path) -> Result<Config, ModelError> {
        let arch_name = match raw.get("architectures") {
            Some(Value::Array(a)) => a.first().and_then(|v| v.as_str()).unwrap_or("").to_string(),
            _ => String::new(),
        };
        let arch = match arch_name.as_str() {
            "Qwen2ForCausalLM" => Arch::Qwen2,
            "Qwen3ForCausalLM" => Arch::Qwen3,
            "LlamaForCausalLM" => Arch::Llama,
            "MistralForCausalLM" => Arch::Mistral,
            "" => {
                return Err(ModelError::invalid(
                    path,
                    "missing `architectures`; flow supports Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, MistralForCausalLM",
                ))
            }
            other => {
                return Err(ModelError::invalid(
                    path,
                    format!("unsupported architecture `{other}`; flow supports Qwen2ForCausalLM, Qwen3ForCausalLM, LlamaForCausalLM, MistralForCausalLM"),
                ))
            }
        };
        let vocab_size = get_usize(&raw, "vocab_size", path)?;
        let hidden_size = get_usize(&raw, "hidden_size", path)?;
        let intermediate_size = get_usize(&raw, "intermediate_size", path)?;
        let num_hidden_layers = get_usize(&raw, "num_hidden_layers", path)?;
        let num_attention_heads = get_usize(&raw, "num_attention_heads", path)?;
        let num_key_value_heads =
            opt_usize(&raw, "num_key_value_heads", path)?.unwrap_or(num_attention_heads);
        if num_attention_heads == 0
            || num_key_value_heads == 0
            || num_attention_heads % num_key_value_heads != 0
        {
            return Err(ModelError::invalid(
                path,
                format!("num_attention_heads ({num_attention_heads}) must be a positive multiple of num_key_value_heads ({num_key_value_heads})"),
            ));
        }
        let head_dim = match opt_usize(&raw, "head_dim", path)? {
            Some(d) => d,
            None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(ModelError::invalid(path, "hidden_size is not divisible by num_attention_heads and head_dim is not given"));
                }
                hidden_size / num_attention_heads
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(ModelError::invalid(
                path,
                format!("head_dim must be even and positive, got {head_dim}"),
            ));
        }
        if vocab_size == 0 || hidden_size == 0 || intermediate_size == 0 {
            return Err(ModelError::invalid(
                path,
                "vocab_size, hidden_size and intermediate_size must be positive",
            ));
        }
        // Before anything is sized from these numbers: a corrupt config
        // (`num_hidden_layers: 1e15`, `head_dim: 2^40`) must be an error,
        // not an allocation abort that takes the whole run down.
        for (key, value, limit) in [
            ("num_hidden_layers", num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", num_attention_heads, MAX_DIM),
            ("num_key_value_heads", num_key_value_heads, MAX_DIM),
            ("head_dim", head_dim, MAX_DIM),
            ("hidden_size", hidden_size, MAX_DIM),
            ("intermediate_size", intermediate_size, MAX_DIM),
            ("vocab_size", vocab_size, MAX_VOCAB),
        ] {
            if value > limit {
                return Err(ModelError::invalid(
                    path,
                    format!("`{key}` is {value}, more than flow accepts ({limit}): the file is corrupt or not a supported model"),
                ));
            }
        }
        // rope: transformers 5 writes `rope_parameters: {rope_theta, rope_type}`, older versions
        // `rope_theta` at the top level and `rope_scaling` for non-default types.
        let mut rope_theta = opt_f64(&raw, "rope_theta", path)?;
        let mut rope_type: Option<String> = None;
        for key in ["rope_parameters", "rope_scaling"] {
            if let Some(Value::Object(rp)) = raw.get(key) {
                if let Some(t) = opt_f64(rp, "rope_theta", path)? {
                    rope_theta = Some(t);
                }
                if let Some(t) = rp
                    .get("rope_type")
                    .or_else(|| rp.get("type"))
                    .and_then(|v| v.as_str())
                {
                    rope_type = Some(t.to_string());
                }
            }
        }
        if let Some(t) = rope_type.as_deref() {
            if t != "default" {
                return Err(ModelError::invalid(
                    path,
                    format!(
                        "rope type `{t}` is not supported (only the default rotary embedding is)"
                    ),
                ));
            }
        }
        let rope_theta = rope_theta.unwrap_or(10000.0);
        let rms_norm_eps = opt_f64(&raw, "rms_norm_eps", path)?.unwrap_or(1e-6);
        let max_position_embeddings =
            opt_usize(&raw, "max_position_embeddings", path)?.unwrap_or(4096);
        let tie_word_embeddings = opt_bool(&raw, "tie_word_embeddings", path)?.unwrap_or(false);
        if let Some(act) = raw.get("hidden_act").and_then(|v| v.as_str()) {
            if act != "silu" && act != "swish" {
                return Err(ModelError::invalid(
                    path,
                    format!("hidden_act `{act}` is not supported (only silu)"),
                ));
            }
        }
        if opt_bool(&raw, "mlp_bias", path)? == Some(true) {
            return Err(ModelError::invalid(
                path,
                "mlp_bias = true is not supported",
            ));
        }
        let declared_bias = opt_bool(&raw, "attention_bias", path)?.unwrap_or(false);
        let (attention_bias, o_bias) = match arch {
            Arch::Qwen2 => (true, false),
            Arch::Qwen3 => (declared_bias, false),
            Arch::Llama | Arch::Mistral => (declared_bias, declared_bias),
        };
        let sliding_window = match arch {
            Arch::Mistral => opt_usize(&raw, "sliding_window", path)?,
            Arch::Qwen2 | Arch::Qwen3 => {
                if opt_bool(&raw, "use_sliding_window", path)?.unwrap_or(false) {
                    opt_usize(&raw, "sliding_window", path)?
                } else {
                    None
                }
            }
            Arch::Llama => None,
        };
        let layer_windows = match (sliding_window, raw.get("layer_types")) {
            (None, _) => vec![None; num_hidden_layers],
            (Some(w), Some(Value::Array(types))) => {
                if types.len() != num_hidden_layers {
                    return Err(ModelError::invalid(path, format!("layer_types has {} entries but num_hidden_layers is {num_hidden_layers}", types.len())));
                }
                types
                    .iter()
                    .map(|t| (t.as_str() == Some("sliding_attention")).then_some(w))
                    .collect()
            }
            (Some(w), _) => match arch {
                Arch::Mistral => vec![Some(w); num_hidden_layers],
                _ => {
                    let first = opt_usize(&raw, "max_window_layers", path)?.unwrap_or(0);
                    (0..num_hidden_layers)
                        .map(|i| (i >= first).then_some(w))
                        .collect()
                }
            },
        };
        let eos_token_ids = token_ids(raw.get("eos_token_id"));
        let bos_token_id = token_ids(raw.get("bos_token_id")).first().copied();
        Ok(Config {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings,
            tie_word_embeddings,
            sliding_window,
            layer_windows,
            attention_bias,
            o_bias,
            qk_norm: arch == Arch::Qwen3,
            eos_token_ids,
            bos_token_id,
            raw,
        })
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }
    /// Width of the concatenated key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Every parameter tensor in HF naming and order, with its shape.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, q, kv, d) = (
            self.hidden_size,
            self.intermediate_size,
            self.q_dim(),
            self.kv_dim(),
            self.head_dim,
        );
        let mut out = vec![(
            "model.embed_tokens.weight".to_string(),
            vec![self.vocab_size, h],
        )];
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}.");
            out.push((format!("{p}input_layernorm.weight"), vec![h]));
            out.push((format!("{p}self_attn.q_proj.weight"), vec![q, h]));
            if self.attention_bias {
                out.push((format!("{p}self_attn.q_proj.bias"), vec![q]));
            }
            out.push((format!("{p}self_attn.k_proj.weight"), vec![kv, h]));
            if self.attention_bias {
                out.push((format!("{p}self_attn.k_proj.bias"), vec![kv]));
            }
            out.push((format!("{p}self_attn.v_proj.weight"), vec![kv, h]));
            if self.attention_bias {
                out.push((format!("{p}self_attn.v_proj.bias"), vec![kv]));
            }
            out.push((format!("{p}self_attn.o_proj.weight"), vec![h, q]));
            if self.o_bias {
                out.push((format!("{p}self_attn.o_proj.bias"), vec![h]));
            }
            if self.qk_norm {
                out.push((format!("{p}self_attn.q_norm.weight"), vec![d]));
                out.push((format!("{p}self_attn.k_norm.weight"), vec![d]));
            }
            out.push((format!("{p}post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![self.vocab_size, h]));
        }
        out
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn param_count(&self) -> u64 {
        self.param_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>() as u64)
            .sum()
    }

    /// The parameters that enter the `6 · N · tokens` training-FLOPs estimate
    /// of the training-dynamics paper (004, Table 2): every parameter except
    /// the input embedding table, which is a lookup, not a matrix product.
    /// An untied `lm_head` is a matrix product over every position and
    /// counts; a tied one shares the table and is not counted again. With the
    /// public configs of Qwen2.5-0.5B…7B and Qwen3-0.6B…8B and 9.5B tokens
    /// this reproduces every row of Table 2 to within 1%.
    pub fn non_embedding_param_count(&self) -> u64 {
        self.param_count() - (self.vocab_size * self.hidden_size) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 004 Table 2: training FLOPs of one epoch over FineMed-de (9.5B Qwen
    /// tokens) = 6 · N_non-embedding · tokens. The configs are the public
    /// `config.json` files of the Hugging Face repos Qwen/Qwen2.5-{0.5B,1.5B,
    /// 3B,7B}-Instruct and Qwen/Qwen3-{0.6B,1.7B,4B,8B} (hidden_size,
    /// intermediate_size, num_hidden_layers, num_attention_heads,
    /// num_key_value_heads, head_dim, vocab_size, tie_word_embeddings).
    /// The table's FLOPs are the paper's numbers.
    /// (name, arch, hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tied, FLOPs)
    type Row = (
        &'static str,
        &'static str,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
        f64,
    );

    #[test]
    fn non_embedding_flops_reproduce_table_2_of_the_training_dynamics_paper() {
        // (name, arch, hidden, intermediate, layers, heads, kv heads, head_dim, vocab, tied, FLOPs)
        #[rustfmt::skip]
        let rows: [Row; 8] = [
            ("Qwen2.5-0.5B", "Qwen2ForCausalLM", 896, 4864, 24, 14, 2, 64, 151936, true, 2.03e19),
            ("Qwen2.5-1.5B", "Qwen2ForCausalLM", 1536, 8960, 28, 12, 2, 128, 151936, true, 7.42e19),
            ("Qwen2.5-3B", "Qwen2ForCausalLM", 2048, 11008, 36, 16, 2, 128, 151936, true, 1.57e20),
            ("Qwen2.5-7B", "Qwen2ForCausalLM", 3584, 18944, 28, 28, 4, 128, 152064, false, 4.00e20),
            ("Qwen3-0.6B", "Qwen3ForCausalLM", 1024, 3072, 28, 16, 8, 128, 151936, true, 2.49e19),
            ("Qwen3-1.7B", "Qwen3ForCausalLM", 2048, 6144, 28, 16, 8, 128, 151936, true, 7.98e19),
            ("Qwen3-4B", "Qwen3ForCausalLM", 2560, 9728, 36, 32, 8, 128, 151936, true, 2.06e20),
            ("Qwen3-8B", "Qwen3ForCausalLM", 4096, 12288, 36, 32, 8, 128, 151936, false, 4.29e20),
        ];
        for (name, arch, h, i, l, heads, kv, d, vocab, tied, table) in rows {
            let raw = serde_json::json!({
                "architectures": [arch],
                "hidden_size": h,
                "intermediate_size": i,
                "num_hidden_layers": l,
                "num_attention_heads": heads,
                "num_key_value_heads": kv,
                "head_dim": d,
                "vocab_size": vocab,
                "tie_word_embeddings": tied,
                "rms_norm_eps": 1e-6,
                "rope_theta": 1000000.0,
                "max_position_embeddings": 32768,
            });
            let Value::Object(raw) = raw else {
                unreachable!()
            };
            let c = Config::from_json(raw, Path::new("config.json")).unwrap();
            let flops = 6.0 * c.non_embedding_param_count() as f64 * 9.5e9;
            let rel = flops / table - 1.0;
            // Table 2 gives three significant digits and a rounded token count.
            assert!(
                rel.abs() < 0.01,
                "{name}: {flops:.3e} vs Table 2's {table:.3e} ({:+.2}%)",
                100.0 * rel
            );
            // Counting the embedding table too (the old rule) misses by far more.
            let all = 6.0 * c.param_count() as f64 * 9.5e9;
            assert!(all / table - 1.0 > 0.05, "{name}: {all:.3e}");
        }
    }
}
