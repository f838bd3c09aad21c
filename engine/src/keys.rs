//! Cache keys: what identifies the work a node does.
//!
//! A key is blake3 over a canonical encoding of its [`KeyParts`]: the op name,
//! the op's version, every argument in a canonical text form (params by
//! value, floats in shortest round-trip form, records sorted), the content
//! hashes of upstream artifacts and of `file()`/`dir()` inputs, and for a map
//! element the element's value. Paths of artifacts in the cache, the device
//! and the thread count are never part of a key, so a cache can move and a
//! node keeps its key whatever machine runs it.
//!
//! Because upstream artifacts enter by *content*, a node whose upstream reran
//! but produced byte-identical output keeps its key (early cutoff).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::op::Value;
use serde::{Deserialize, Serialize};

/// Version of the key encoding; bump when the encoding changes.
const KEY_SCHEMA: &str = "flow-key-v1";

/// A 256-bit blake3 digest in lower-case hex.
pub type Hex = String;

/// The parts a key is made of, by label (`op`, `version`, `arg.NAME`,
/// `element`), each in canonical text. Kept in the run history and in the
/// artifact's meta.json so `flow plan` can say which part changed.
pub type KeyParts = BTreeMap<String, String>;

/// Computes the key of a set of parts.
pub fn key_of(parts: &KeyParts) -> Hex {
    let mut h = blake3::Hasher::new();
    h.update(KEY_SCHEMA.as_bytes());
    for (label, text) in parts {
        h.update(&(label.len() as u64).to_le_bytes());
        h.update(label.as_bytes());
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// A float in a canonical form: the shortest text that reads back to the
/// same f64 (Rust's `{:?}`), with `-0.0` folded into `0.0`.
pub fn canonical_float(f: f64) -> String {
    if f == 0.0 {
        "0.0".to_string()
    } else if f.is_nan() {
        "NaN".to_string()
    } else {
        format!("{f:?}")
    }
}

/// A value in canonical text: tagged scalars, lists in order, records
/// sorted by field name.
pub fn canonical_value(v: &Value) -> String {
    let mut s = String::new();
    write_value(&mut s, v);
    s
}

fn write_value(s: &mut String, v: &Value) {
    match v {
        Value::Bool(b) => {
            let _ = write!(s, "{b}");
        }
        Value::Int(i) => {
            let _ = write!(s, "{i}");
        }
        Value::Float(f) => s.push_str(&canonical_float(*f)),
        Value::Str(t) => write_str(s, t),
        Value::Path(p) => {
            s.push_str("path:");
            write_str(s, &p.to_string_lossy());
        }
        Value::List(items) => write_list(s, items, write_value),
        Value::Record(fields) => write_record(s, fields, write_value),
    }
}

/// `[a,b,...]`, each item written by `item`.
fn write_list<T>(s: &mut String, items: &[T], item: impl Fn(&mut String, &T)) {
    s.push('[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        item(s, x);
    }
    s.push(']');
}

/// `{"k":v,...}` in the map's (sorted) order, each value written by `item`.
fn write_record<T>(s: &mut String, fields: &BTreeMap<String, T>, item: impl Fn(&mut String, &T)) {
    s.push('{');
    for (i, (k, x)) in fields.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write_str(s, k);
        s.push(':');
        item(s, x);
    }
    s.push('}');
}

fn write_str(s: &mut String, t: &str) {
    // JSON string escaping is canonical for a given string.
    s.push_str(&serde_json::Value::String(t.to_string()).to_string());
}

/// A resolved argument: what the op will get, plus, for every path in it,
/// the content hash that stands for it in the key.
#[derive(Clone, Debug, PartialEq)]
pub enum RVal {
    /// A literal or param value (no paths inside).
    Lit(Value),
    /// A path whose identity in the key is `key` (e.g. `artifact:HASH`,
    /// `artifact:HASH/rel/path`, `file:HASH`).
    Path {
        path: PathBuf,
        key: String,
    },
    List(Vec<RVal>),
    Record(BTreeMap<String, RVal>),
    /// A template, rendered when the output directory is known.
    Template(Vec<TPart>),
    /// A param reference: kept by name so the key part says which param.
    Param {
        name: String,
        value: Value,
    },
}

/// A piece of a template after resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum TPart {
    Text(String),
    Out,
    Val(RVal),
}

impl RVal {
    /// The value the op gets; `out` replaces `{out}` in templates.
    pub fn to_value(&self, out: &Path) -> Value {
        match self {
            RVal::Lit(v) | RVal::Param { value: v, .. } => v.clone(),
            RVal::Path { path, .. } => Value::Path(path.clone()),
            RVal::List(items) => Value::List(items.iter().map(|i| i.to_value(out)).collect()),
            RVal::Record(f) => Value::Record(
                f.iter()
                    .map(|(k, v)| (k.clone(), v.to_value(out)))
                    .collect(),
            ),
            RVal::Template(parts) => {
                let mut s = String::new();
                for p in parts {
                    match p {
                        TPart::Text(t) => s.push_str(t),
                        TPart::Out => s.push_str(&out.to_string_lossy()),
                        TPart::Val(v) => s.push_str(&template_text(&v.to_value(out))),
                    }
                }
                Value::Str(s)
            }
        }
    }

    /// Adds every path in this value, with the identity that stands for it
    /// in the key, to `ids` (what [`crate::op::OpContext::input_name`]
    /// answers from). A path inside a template is text by then: not added.
    pub fn collect_input_ids(&self, ids: &mut BTreeMap<PathBuf, String>) {
        match self {
            RVal::Path { path, key } => {
                ids.insert(path.clone(), key.clone());
            }
            RVal::List(items) => items.iter().for_each(|i| i.collect_input_ids(ids)),
            RVal::Record(fields) => fields.values().for_each(|v| v.collect_input_ids(ids)),
            RVal::Lit(_) | RVal::Param { .. } | RVal::Template(_) => {}
        }
    }

    /// The canonical text of this value for the key: paths are replaced by
    /// their content identity, `{out}` stays a marker.
    pub fn key_text(&self) -> String {
        let mut s = String::new();
        self.write_key(&mut s);
        s
    }

    fn write_key(&self, s: &mut String) {
        match self {
            RVal::Lit(v) => write_value(s, v),
            RVal::Param { name, value } => {
                let _ = write!(s, "param {name}=");
                write_value(s, value);
            }
            RVal::Path { key, .. } => s.push_str(key),
            RVal::List(items) => write_list(s, items, |s, x| x.write_key(s)),
            RVal::Record(fields) => write_record(s, fields, |s, x| x.write_key(s)),
            RVal::Template(parts) => {
                s.push_str("template(");
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    match p {
                        TPart::Text(t) => write_str(s, t),
                        TPart::Out => s.push_str("{out}"),
                        TPart::Val(v) => v.write_key(s),
                    }
                }
                s.push(')');
            }
        }
    }
}

/// How a value appears inside a rendered template string.
fn template_text(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        Value::Path(p) => p.to_string_lossy().into_owned(),
        Value::Float(f) => canonical_float(*f),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::List(items) => items
            .iter()
            .map(template_text)
            .collect::<Vec<_>>()
            .join(" "),
        Value::Record(_) => canonical_value(v),
    }
}

/// Outputs as stored in meta.json: JSON with paths tagged as
/// `{"$path": "relative/path"}` so they read back as paths.
pub fn value_to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        Value::Str(s) => J::String(s.clone()),
        Value::Path(p) => {
            let mut m = serde_json::Map::new();
            m.insert("$path".into(), J::String(p.to_string_lossy().into_owned()));
            J::Object(m)
        }
        Value::List(items) => J::Array(items.iter().map(value_to_json).collect()),
        Value::Record(f) => J::Object(
            f.iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
    }
}

/// The inverse of [`value_to_json`].
pub fn value_from_json(j: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    match j {
        J::Null => Value::Str(String::new()),
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Str(s.clone()),
        J::Array(a) => Value::List(a.iter().map(value_from_json).collect()),
        J::Object(m) => {
            if m.len() == 1 {
                if let Some(J::String(p)) = m.get("$path") {
                    return Value::Path(PathBuf::from(p));
                }
            }
            Value::Record(
                m.iter()
                    .map(|(k, v)| (k.clone(), value_from_json(v)))
                    .collect(),
            )
        }
    }
}

/// The key parts and key of one unit of work (a node, or one element of a
/// map node).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UnitKey {
    pub key: Hex,
    pub parts: KeyParts,
}

/// Builds the key parts of a unit from its op, version, resolved arguments
/// and (for a map element) the element.
pub fn unit_key(
    op: &str,
    version: u32,
    args: &BTreeMap<String, RVal>,
    element: Option<&RVal>,
) -> UnitKey {
    let mut parts = KeyParts::new();
    parts.insert("op".into(), op.to_string());
    parts.insert("version".into(), version.to_string());
    for (name, v) in args {
        parts.insert(format!("arg.{name}"), v.key_text());
    }
    if let Some(e) = element {
        parts.insert("element".into(), e.key_text());
    }
    UnitKey {
        key: key_of(&parts),
        parts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_canonical() {
        assert_eq!(canonical_float(0.1), "0.1");
        assert_eq!(canonical_float(-0.0), "0.0");
        assert_eq!(canonical_float(1.0), "1.0");
        assert_eq!(canonical_float(1e-7), "1e-7");
        assert_eq!(canonical_float(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn records_are_sorted_and_paths_replaced() {
        let mut r = BTreeMap::new();
        r.insert("b".to_string(), RVal::Lit(Value::Int(1)));
        r.insert(
            "a".to_string(),
            RVal::Path {
                path: "/cache/x/out".into(),
                key: "artifact:abc".into(),
            },
        );
        assert_eq!(RVal::Record(r).key_text(), r#"{"a":artifact:abc,"b":1}"#);
    }

    #[test]
    fn key_changes_with_any_part_and_not_with_paths() {
        let mut args = BTreeMap::new();
        args.insert(
            "x".to_string(),
            RVal::Path {
                path: "/one/place".into(),
                key: "artifact:h1".into(),
            },
        );
        let k1 = unit_key("op", 1, &args, None);
        args.insert(
            "x".to_string(),
            RVal::Path {
                path: "/another/place".into(),
                key: "artifact:h1".into(),
            },
        );
        assert_eq!(unit_key("op", 1, &args, None).key, k1.key);
        assert_ne!(unit_key("op", 2, &args, None).key, k1.key);
        assert_ne!(unit_key("op2", 1, &args, None).key, k1.key);
        let e = RVal::Lit(Value::Str("a".into()));
        assert_ne!(unit_key("op", 1, &args, Some(&e)).key, k1.key);
    }

    #[test]
    fn length_prefix_keeps_parts_apart() {
        let mut a = KeyParts::new();
        a.insert("ab".into(), "c".into());
        let mut b = KeyParts::new();
        b.insert("a".into(), "bc".into());
        assert_ne!(key_of(&a), key_of(&b));
    }

    #[test]
    fn outputs_roundtrip_through_json() {
        let mut r = BTreeMap::new();
        r.insert("p".to_string(), Value::Path("ckpt/1".into()));
        r.insert("f".to_string(), Value::Float(0.5));
        r.insert(
            "l".to_string(),
            Value::List(vec![Value::Int(1), Value::Str("s".into())]),
        );
        let v = Value::Record(r);
        assert_eq!(value_from_json(&value_to_json(&v)), v);
    }
}
