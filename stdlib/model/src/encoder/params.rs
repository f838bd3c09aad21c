//! The encoder's tensors under Hugging Face's names: loading from any
//! checkpoint of the family (a `*ForSequenceClassification`, a bare
//! `BertModel`/`XLMRobertaModel` without the prefix, or a masked-LM
//! checkpoint, whose `lm_head` is ignored), a seeded initialisation of a
//! missing classification head (transformers' `_init_weights`: normal with
//! `initializer_range`, zero biases), and saving.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rand::SeedableRng;
use rand_distr_normal::normal;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::Value;

use super::config::{EncoderConfig, Family};
use crate::error::{write_atomic, ModelError};
use crate::weights::weight_files;

/// Tensors of the embeddings: word, position, token type, LayerNorm w/b.
pub const EMB: usize = 5;
/// Tensors of one layer.
pub const PER_LAYER: usize = 16;
/// Tensors of the head: dense w/b, output projection w/b.
pub const HEAD: usize = 4;

/// Index of a tensor inside one layer.
pub mod l {
    pub const Q_W: usize = 0;
    pub const Q_B: usize = 1;
    pub const K_W: usize = 2;
    pub const K_B: usize = 3;
    pub const V_W: usize = 4;
    pub const V_B: usize = 5;
    pub const AO_W: usize = 6;
    pub const AO_B: usize = 7;
    pub const LN1_W: usize = 8;
    pub const LN1_B: usize = 9;
    pub const I_W: usize = 10;
    pub const I_B: usize = 11;
    pub const O_W: usize = 12;
    pub const O_B: usize = 13;
    pub const LN2_W: usize = 14;
    pub const LN2_B: usize = 15;
}

/// All tensors of an encoder classifier, in a fixed order (that of [`zeros`]):
/// the runtime's parameter set, so that every backend holds an encoder as it
/// holds a decoder.
pub type EncoderParams = crate::weights::Params;

const LAYER_SUFFIXES: [&str; PER_LAYER] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

/// Zero tensors with the names and shapes of `config`'s classifier (2 labels).
pub fn zeros(c: &EncoderConfig) -> EncoderParams {
    let p = c.prefix();
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut names = Vec::new();
    let mut shapes = Vec::new();
    let mut add = |n: String, s: Vec<usize>| {
        names.push(n);
        shapes.push(s);
    };
    add(
        format!("{p}.embeddings.word_embeddings.weight"),
        vec![c.vocab_size, h],
    );
    add(
        format!("{p}.embeddings.position_embeddings.weight"),
        vec![c.max_position_embeddings, h],
    );
    add(
        format!("{p}.embeddings.token_type_embeddings.weight"),
        vec![c.type_vocab_size, h],
    );
    add(format!("{p}.embeddings.LayerNorm.weight"), vec![h]);
    add(format!("{p}.embeddings.LayerNorm.bias"), vec![h]);
    for layer in 0..c.num_hidden_layers {
        for (k, suf) in LAYER_SUFFIXES.iter().enumerate() {
            let shape = match k {
                l::I_W => vec![i, h],
                l::I_B => vec![i],
                l::O_W => vec![h, i],
                _ if suf.ends_with("weight") && !suf.contains("LayerNorm") => vec![h, h],
                _ => vec![h],
            };
            add(format!("{p}.encoder.layer.{layer}.{suf}"), shape);
        }
    }
    let head: [&str; HEAD] = match c.family {
        Family::Bert => [
            "bert.pooler.dense.weight",
            "bert.pooler.dense.bias",
            "classifier.weight",
            "classifier.bias",
        ],
        Family::Roberta => [
            "classifier.dense.weight",
            "classifier.dense.bias",
            "classifier.out_proj.weight",
            "classifier.out_proj.bias",
        ],
    };
    add(head[0].into(), vec![h, h]);
    add(head[1].into(), vec![h]);
    add(head[2].into(), vec![2, h]);
    add(head[3].into(), vec![2]);
    let data = shapes
        .iter()
        .map(|s| vec![0.0; s.iter().product()])
        .collect();
    EncoderParams {
        names,
        shapes,
        data,
    }
}

/// Index of tensor `k` of layer `layer`.
pub fn layer_index(layer: usize, k: usize) -> usize {
    EMB + layer * PER_LAYER + k
}

/// Index of head tensor `k` (0..4).
pub fn head_index(c: &EncoderConfig, k: usize) -> usize {
    EMB + c.num_hidden_layers * PER_LAYER + k
}

fn view_to_f32(view: &TensorView, name: &str, file: &Path) -> Result<Vec<f32>, ModelError> {
    crate::weights::decode_f32(view.dtype(), view.data())
        .map_err(|e| ModelError::invalid(file, format!("tensor `{name}`: {e}")))
}

/// What loading found.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Head tensors that were missing and freshly initialised.
    pub initialised: Vec<String>,
    /// Tensors in the checkpoint that the classifier does not use (lm_head, pooler of RoBERTa...).
    pub unused: Vec<String>,
}

/// Loads the encoder's tensors; a missing head is initialised from `seed`.
pub fn load_params(
    dir: &Path,
    c: &EncoderConfig,
    seed: u64,
) -> Result<(EncoderParams, LoadReport), ModelError> {
    let mut params = zeros(c);
    let prefix = format!("{}.", c.prefix());
    let wanted: HashMap<String, usize> = params
        .names
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();
    let mut found = vec![false; params.names.len()];
    let mut report = LoadReport::default();
    for file in weight_files(dir)? {
        let f = std::fs::File::open(&file).map_err(|e| ModelError::io(&file, e))?;
        // SAFETY: read only; flow replaces model files by rename, never in place.
        let mmap = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ModelError::io(&file, e))?;
        let st = SafeTensors::deserialize(&mmap).map_err(|e| {
            ModelError::invalid(&file, format!("not a valid safetensors file: {e}"))
        })?;
        for (name, view) in st.tensors() {
            // a bare encoder checkpoint has no `bert.` / `roberta.` prefix
            let full = if wanted.contains_key(&name) {
                name.clone()
            } else {
                format!("{prefix}{name}")
            };
            let Some(&i) = wanted.get(&full) else {
                report.unused.push(name);
                continue;
            };
            if view.shape() != params.shapes[i].as_slice() {
                return Err(ModelError::invalid(
                    &file,
                    format!(
                        "tensor `{name}` has shape {:?} but config.json (with 2 labels) implies {:?}",
                        view.shape(),
                        params.shapes[i]
                    ),
                ));
            }
            params.data[i] = view_to_f32(&view, &name, &file)?;
            found[i] = true;
        }
    }
    let first_head = params.data.len() - HEAD;
    // BERT's pooler counts as head: a checkpoint may lack it (add_pooling_layer=False)
    if let Some(i) = (0..first_head).find(|&i| !found[i]) {
        return Err(ModelError::invalid(
            dir,
            format!(
                "tensor `{}` is missing from the checkpoint",
                params.names[i]
            ),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x00e1_c0de);
    for (i, data) in params.data.iter_mut().enumerate().skip(first_head) {
        if found[i] {
            continue;
        }
        report.initialised.push(params.names[i].clone());
        if params.shapes[i].len() == 2 {
            for v in data.iter_mut() {
                *v = c.initializer_range * normal(&mut rng);
            }
        } else {
            data.fill(0.0);
        }
    }
    Ok((params, report))
}

/// A standard normal draw (Box–Muller), so no distribution crate is needed.
mod rand_distr_normal {
    use rand::Rng;
    pub fn normal(rng: &mut impl Rng) -> f32 {
        let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.random();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// Writes `model.safetensors` (f32, HF names, `format: pt`).
pub fn save_safetensors(path: &Path, params: &EncoderParams) -> Result<(), ModelError> {
    let bytes: Vec<Vec<u8>> = params
        .data
        .iter()
        .map(|d| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = params
        .names
        .iter()
        .zip(&params.shapes)
        .zip(&bytes)
        .map(|((n, s), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("consistent tensor"),
            )
        })
        .collect();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let out = safetensors::serialize(views, Some(meta))
        .map_err(|e| ModelError::invalid(path, format!("serialising: {e}")))?;
    write_atomic(path, &out)
}

/// The config.json of the saved classifier: the base config with the class,
/// the two labels and the problem type set.
pub fn classifier_config(c: &EncoderConfig, labels: [&str; 2]) -> Value {
    let mut raw = c.raw.clone();
    raw.insert(
        "architectures".into(),
        Value::Array(vec![Value::String(c.classifier_class().into())]),
    );
    let id2label: BTreeMap<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (i.to_string(), Value::String(l.to_string())))
        .collect();
    let label2id: BTreeMap<String, Value> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.to_string(), Value::from(i)))
        .collect();
    raw.insert(
        "id2label".into(),
        serde_json::to_value(id2label).expect("json"),
    );
    raw.insert(
        "label2id".into(),
        serde_json::to_value(label2id).expect("json"),
    );
    raw.insert("problem_type".into(), "single_label_classification".into());
    raw.remove("num_labels");
    raw.insert("torch_dtype".into(), "float32".into());
    if raw.contains_key("dtype") {
        raw.insert("dtype".into(), "float32".into());
    }
    Value::Object(raw)
}
