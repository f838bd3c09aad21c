//! `config.json` of the BERT / RoBERTa / XLM-RoBERTa family.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{read_to_string, ModelError};

/// Which layout of names, positions and head the model uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `bert`: positions 0..L, head = pooler (dense + tanh) + classifier.
    Bert,
    /// `roberta` / `xlm-roberta`: positions offset by `pad_token_id + 1`,
    /// head = classifier.dense + tanh + classifier.out_proj.
    Roberta,
}

/// The hyper-parameters flow reads from an encoder's `config.json`.
#[derive(Clone, Debug)]
pub struct EncoderConfig {
    pub family: Family,
    /// `model_type` as written (`bert`, `roberta`, `xlm-roberta`).
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub pad_token_id: u32,
    pub initializer_range: f32,
    /// `hidden_dropout_prob` (training only).
    pub hidden_dropout: f32,
    /// `attention_probs_dropout_prob` (training only).
    pub attention_dropout: f32,
    /// `classifier_dropout`; null means `hidden_dropout_prob`.
    pub classifier_dropout: Option<f32>,
    /// Labels of the classification head (index = class).
    pub labels: Vec<String>,
    /// The whole file, kept so a saved classifier carries every key.
    pub raw: Map<String, Value>,
}

/// A dropout probability: in [0, 1), transformers' default 0.1 when absent.
fn dropout_of(raw: &Map<String, Value>, key: &str, path: &Path) -> Result<Option<f32>, ModelError> {
    match raw.get(key) {
        None => Ok(Some(0.1)),
        Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(p) if (0.0..1.0).contains(&p) => Ok(Some(p as f32)),
            _ => Err(ModelError::invalid(
                path,
                format!("`{key}` is {v}: a dropout probability must be a number in [0, 1)"),
            )),
        },
    }
}

fn usize_of(raw: &Map<String, Value>, key: &str, path: &Path) -> Result<usize, ModelError> {
    raw.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| ModelError::invalid(path, format!("missing or non-integer `{key}`")))
}

impl EncoderConfig {
    /// Reads `model_dir/config.json`.
    pub fn load(model_dir: &Path) -> Result<EncoderConfig, ModelError> {
        let path = model_dir.join("config.json");
        let text = read_to_string(&path)?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(&path, format!("not valid JSON: {e}")))?;
        let Value::Object(raw) = v else {
            return Err(ModelError::invalid(&path, "expected a JSON object"));
        };
        Self::from_raw(raw, &path)
    }

    pub fn from_raw(raw: Map<String, Value>, path: &Path) -> Result<EncoderConfig, ModelError> {
        let model_type = raw
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let family = match model_type.as_str() {
            "bert" => Family::Bert,
            "roberta" | "xlm-roberta" => Family::Roberta,
            other => {
                return Err(ModelError::invalid(
                    path,
                    format!(
                    "model_type {other:?} is not an encoder flow runs (bert, roberta, xlm-roberta)"
                ),
                ))
            }
        };
        let act = raw
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        if act != "gelu" {
            return Err(ModelError::invalid(
                path,
                format!("hidden_act {act:?}: flow's encoder implements \"gelu\" (the exact erf form) only"),
            ));
        }
        if let Some(p) = raw.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(ModelError::invalid(
                    path,
                    format!("position_embedding_type {p:?}: flow implements \"absolute\" only"),
                ));
            }
        }
        let hidden_size = usize_of(&raw, "hidden_size", path)?;
        let heads = usize_of(&raw, "num_attention_heads", path)?;
        if heads == 0 || hidden_size % heads != 0 {
            return Err(ModelError::invalid(
                path,
                format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {heads}"
                ),
            ));
        }
        let labels = match raw.get("id2label").and_then(Value::as_object) {
            Some(m) => {
                let mut pairs: Vec<(usize, String)> = m
                    .iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_string())))
                    .collect();
                pairs.sort();
                pairs.into_iter().map(|p| p.1).collect()
            }
            None => Vec::new(),
        };
        let pad_default = match family {
            Family::Bert => 0,
            Family::Roberta => 1,
        };
        Ok(EncoderConfig {
            family,
            model_type,
            vocab_size: usize_of(&raw, "vocab_size", path)?,
            hidden_size,
            num_hidden_layers: usize_of(&raw, "num_hidden_layers", path)?,
            num_attention_heads: heads,
            intermediate_size: usize_of(&raw, "intermediate_size", path)?,
            max_position_embeddings: usize_of(&raw, "max_position_embeddings", path)?,
            type_vocab_size: raw
                .get("type_vocab_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
            layer_norm_eps: raw
                .get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12) as f32,
            pad_token_id: raw
                .get("pad_token_id")
                .and_then(Value::as_u64)
                .unwrap_or(pad_default) as u32,
            initializer_range: raw
                .get("initializer_range")
                .and_then(Value::as_f64)
                .unwrap_or(0.02) as f32,
            hidden_dropout: dropout_of(&raw, "hidden_dropout_prob", path)?.unwrap_or(0.1),
            attention_dropout: dropout_of(&raw, "attention_probs_dropout_prob", path)?
                .unwrap_or(0.1),
            classifier_dropout: match raw.get("classifier_dropout") {
                None => None,
                Some(_) => dropout_of(&raw, "classifier_dropout", path)?,
            },
            labels,
            raw,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The longest input (special tokens included) the position table allows.
    pub fn max_tokens(&self) -> usize {
        match self.family {
            Family::Bert => self.max_position_embeddings,
            Family::Roberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }

    /// The HF class of the sequence classifier of this family.
    pub fn classifier_class(&self) -> &'static str {
        match (self.family, self.model_type.as_str()) {
            (Family::Bert, _) => "BertForSequenceClassification",
            (Family::Roberta, "roberta") => "RobertaForSequenceClassification",
            (Family::Roberta, _) => "XLMRobertaForSequenceClassification",
        }
    }

    /// The prefix of the encoder's tensor names in the classifier class.
    pub fn prefix(&self) -> &'static str {
        match self.family {
            Family::Bert => "bert",
            Family::Roberta => "roberta",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Result<EncoderConfig, ModelError> {
        let text = format!(
            r#"{{"model_type": "xlm-roberta", "vocab_size": 10, "hidden_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                "max_position_embeddings": 16{extra}}}"#
        );
        let Value::Object(raw) = serde_json::from_str(&text).unwrap() else {
            unreachable!()
        };
        EncoderConfig::from_raw(raw, Path::new("config.json"))
    }

    /// transformers' BertConfig / XLMRobertaConfig defaults: 0.1, 0.1, None.
    #[test]
    fn dropout_probabilities_default_as_transformers_and_are_checked() {
        let c = config("").unwrap();
        assert_eq!(
            (c.hidden_dropout, c.attention_dropout, c.classifier_dropout),
            (0.1, 0.1, None)
        );
        let c = config(r#", "hidden_dropout_prob": 0.2, "classifier_dropout": 0.3"#).unwrap();
        assert_eq!((c.hidden_dropout, c.classifier_dropout), (0.2, Some(0.3)));
        let err = config(r#", "attention_probs_dropout_prob": 1.5"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("attention_probs_dropout_prob") && err.contains("[0, 1)"),
            "{err}"
        );
    }
}
