//! Typed params: an op reads its resolved params as one serde struct
//! ([`OpContext::params`](super::OpContext::params)), and the op's spec and
//! a registry-wide test read the same struct's shape ([`ParamsShape`],
//! [`variants_of`]) from its `Deserialize` impl, so an enum's strings and a
//! struct's field names are written once.
//!
//! Reading: the params map is deserialised field by field through
//! [`Value`]'s own deserializer; a failure names the param. Shape: a probe
//! deserializer answers each `deserialize_*` call of the derived impl with a
//! placeholder and records the struct's field list and each field's enum
//! variants (serde passes both to the deserializer).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::{OpResult, Value};

/// Why params could not be read into an op's params struct.
#[derive(Debug)]
pub struct ParamError(String);

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ParamError(msg.to_string())
    }
    fn missing_field(field: &'static str) -> Self {
        ParamError(format!("internal: parameter `{field}` was not provided"))
    }
}

/// Reads `params` (every declared param, defaults filled) into `T`; an
/// error names the param whose value does not fit its field.
pub fn from_params<T: DeserializeOwned>(params: &BTreeMap<String, Value>) -> OpResult<T> {
    T::deserialize(ParamsDe(params)).map_err(|e| miette::miette!("{e}"))
}

/// The top-level params map as a deserializer.
struct ParamsDe<'a>(&'a BTreeMap<String, Value>);

impl<'de> de::Deserializer<'de> for ParamsDe<'_> {
    type Error = ParamError;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_map(ParamsAccess {
            entries: self.0.iter(),
            key: "",
            value: None,
        })
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct ParamsAccess<'a> {
    entries: std::collections::btree_map::Iter<'a, String, Value>,
    key: &'a str,
    value: Option<&'a Value>,
}

impl<'de> de::MapAccess<'de> for ParamsAccess<'_> {
    type Error = ParamError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ParamError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.key = key;
        self.value = Some(value);
        let key: StrDeserializer<ParamError> = key.as_str().into_deserializer();
        seed.deserialize(key).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ParamError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| ParamError("internal: a param value read twice".into()))?;
        seed.deserialize(ValueDe(value))
            .map_err(|e| ParamError(format!("parameter `{}`: {e}", self.key)))
    }
}

/// One resolved value as a deserializer: paths read as strings (a
/// `PathBuf` field takes them), enum fields take a string naming a unit
/// variant, `Option` fields are always `Some` (every param has a value).
struct ValueDe<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, ParamError> for ValueDe<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> de::Deserializer<'de> for ValueDe<'_> {
    type Error = ParamError;
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Path(p) => match p.to_str() {
                Some(s) => visitor.visit_str(s),
                None => Err(ParamError(format!(
                    "the path {} is not valid UTF-8; rename it",
                    p.display()
                ))),
            },
            Value::List(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.iter().map(ValueDe));
                let v = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(v)
            }
            Value::Record(fields) => {
                let mut map = de::value::MapDeserializer::new(
                    fields.iter().map(|(k, v)| (k.as_str(), ValueDe(v))),
                );
                let v = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(v)
            }
        }
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        match self.0 {
            // A path stays a path for `PathOrStr`; a string is a string.
            Value::Str(s) if name == PATH_OR_STR => visitor.visit_str(s),
            _ => visitor.visit_newtype_struct(self),
        }
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        match self.0 {
            Value::Str(s) => {
                let s: StrDeserializer<ParamError> = s.as_str().into_deserializer();
                visitor.visit_enum(s)
            }
            other => Err(ParamError(format!(
                "expected one of the enum's strings, got a {}",
                other.kind()
            ))),
        }
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

/// A param that takes a path (a node, `file()`, `dir()`) or a string, and
/// means different things by each (a template file or its text; a local
/// model or an endpoint's model name). Serde sees both as strings, so the
/// params deserializer tells them apart through a newtype of this name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathOrStr {
    Path(std::path::PathBuf),
    Str(String),
}

const PATH_OR_STR: &str = "flow::PathOrStr";

impl<'de> de::Deserialize<'de> for PathOrStr {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = PathOrStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path or a string")
            }
            fn visit_newtype_struct<D: de::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<PathOrStr, D::Error> {
                std::path::PathBuf::deserialize(d).map(PathOrStr::Path)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PathOrStr, E> {
                Ok(PathOrStr::Str(s.to_owned()))
            }
        }
        use serde::Deserialize;
        d.deserialize_newtype_struct(PATH_OR_STR, Either)
    }
}

/// The serde name of a unit variant: the string the param was given
/// (e.g. to write it into a result file). Empty for a value that does not
/// serialise to a string, which a unit variant always does.
pub fn variant_name<E: serde::Serialize>(value: &E) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// The serde names of a unit-variant enum's variants, in declaration
/// order: what a `Type::Enum` param built from it accepts.
pub fn variants_of<E: DeserializeOwned>() -> Vec<&'static str> {
    let found = RefCell::new(None);
    // Only what the placeholder recorded counts, not what it built.
    let _ = E::deserialize(Placeholder(&found));
    found.into_inner().unwrap_or_else(|| {
        panic!(
            "{} is not an enum of unit variants (serde called no deserialize_enum)",
            std::any::type_name::<E>()
        )
    })
}

/// One field of a params struct: its serde name and, for a field whose
/// type is (an `Option` or list of) a unit-variant enum, the variants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldShape {
    pub name: &'static str,
    pub variants: Option<Vec<&'static str>>,
}

/// The shape of an op's params struct, read from its `Deserialize` impl:
/// what the registry-wide test compares with the op's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamsShape {
    pub fields: Vec<FieldShape>,
}

impl ParamsShape {
    /// The shape of `T`, a struct with named fields (no `flatten`, which
    /// hides the field list from the deserializer).
    pub fn of<T: DeserializeOwned>() -> ParamsShape {
        let fields = RefCell::new(None);
        // Placeholder values may not satisfy the struct (a validating
        // field type); the field list and variants are recorded first.
        let _ = T::deserialize(StructProbe(&fields));
        let fields = fields.into_inner().unwrap_or_else(|| {
            panic!(
                "{} is not a struct with named fields",
                std::any::type_name::<T>()
            )
        });
        ParamsShape {
            fields: fields
                .into_iter()
                .map(|(name, variants)| FieldShape { name, variants })
                .collect(),
        }
    }
}

type Recorded = Vec<(&'static str, Option<Vec<&'static str>>)>;

struct StructProbe<'r>(&'r RefCell<Option<Recorded>>);

impl<'de> de::Deserializer<'de> for StructProbe<'_> {
    type Error = ParamError;
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, ParamError> {
        Err(ParamError("not a struct".into()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        *self.0.borrow_mut() = Some(fields.iter().map(|f| (*f, None)).collect());
        visitor.visit_map(ProbeFields {
            fields,
            next: 0,
            record: Some(self.0),
        })
    }
    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A struct's fields, each with a placeholder value; `record` (the top
/// level only) receives each field's enum variants.
struct ProbeFields<'r> {
    fields: &'static [&'static str],
    next: usize,
    record: Option<&'r RefCell<Option<Recorded>>>,
}

impl<'de> de::MapAccess<'de> for ProbeFields<'_> {
    type Error = ParamError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ParamError> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<ParamError> = field.into_deserializer();
        seed.deserialize(key).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, ParamError> {
        let index = self.next;
        self.next += 1;
        let variants = RefCell::new(None);
        let value = seed.deserialize(Placeholder(&variants));
        if let Some(record) = self.record {
            if let Some(fields) = record.borrow_mut().as_mut() {
                fields[index].1 = variants.into_inner();
            }
        }
        value
    }
}

/// A placeholder for any value a derived impl asks for (numbers are 1,
/// which a `NonZero*` field takes too); an enum records its variants into
/// the cell and takes the first.
struct Placeholder<'r>(&'r RefCell<Option<Vec<&'static str>>>);

impl<'de> de::Deserializer<'de> for Placeholder<'_> {
    type Error = ParamError;
    // Self-describing types (`Value`, untagged enums of a path and a list
    // or number) take a string.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_str("")
    }
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_i64(1)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_i64(1)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_u64(1)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_f64(1.0)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_bool(false)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_u64(1)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_f64(1.0)
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_str("")
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_str("")
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        // One element, so a list of enums shows its variants.
        visitor.visit_seq(OneElement(Some(self.0)))
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_map(de::value::MapDeserializer::new(std::iter::empty::<(
            &str,
            &str,
        )>()))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        visitor.visit_map(ProbeFields {
            fields,
            next: 0,
            record: None,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ParamError> {
        *self.0.borrow_mut() = Some(variants.to_vec());
        let first: StrDeserializer<ParamError> =
            variants.first().copied().unwrap_or("").into_deserializer();
        visitor.visit_enum(first)
    }
    forward_to_deserialize_any! {
        i8 i16 i128 u8 u16 u128 char bytes byte_buf unit unit_struct tuple
        tuple_struct identifier ignored_any
    }
}

struct OneElement<'r>(Option<&'r RefCell<Option<Vec<&'static str>>>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = ParamError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ParamError> {
        match self.0.take() {
            Some(cell) => seed.deserialize(Placeholder(cell)).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::path::PathBuf;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Schedule {
        Cosine,
        #[serde(rename = "linear-decay")]
        Linear,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Sample {
        batch: std::num::NonZeroUsize,
        lr: f64,
        steps: usize,
        schedule: Schedule,
        maybe: Option<Schedule>,
        kinds: Vec<Schedule>,
        model: PathBuf,
        #[serde(rename = "type")]
        kind: String,
        weights: Vec<f64>,
        any: Value,
        file: PathOrStr,
        text: PathOrStr,
    }

    fn sample() -> BTreeMap<String, Value> {
        [
            ("batch", Value::Int(4)),
            ("lr", Value::Int(2)),
            ("steps", Value::Int(7)),
            ("schedule", Value::Str("linear-decay".into())),
            ("maybe", Value::Str("cosine".into())),
            ("kinds", Value::List(vec![Value::Str("cosine".into())])),
            ("model", Value::Path("/m/x".into())),
            ("type", Value::Str("t".into())),
            (
                "weights",
                Value::List(vec![Value::Float(0.5), Value::Int(1)]),
            ),
            ("any", Value::List(vec![Value::Float(0.5), Value::Int(1)])),
            ("file", Value::Path("/t.yaml".into())),
            ("text", Value::Str("/t.yaml".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn params_are_read_into_the_struct() {
        let p: Sample = from_params(&sample()).unwrap();
        assert_eq!(
            p,
            Sample {
                batch: std::num::NonZeroUsize::new(4).unwrap(),
                lr: 2.0,
                steps: 7,
                schedule: Schedule::Linear,
                maybe: Some(Schedule::Cosine),
                kinds: vec![Schedule::Cosine],
                model: PathBuf::from("/m/x"),
                kind: "t".into(),
                weights: vec![0.5, 1.0],
                any: Value::List(vec![Value::Float(0.5), Value::Int(1)]),
                file: PathOrStr::Path("/t.yaml".into()),
                text: PathOrStr::Str("/t.yaml".into()),
            }
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_its_param() {
        let mut params = sample();
        params.insert("steps".into(), Value::Int(-1));
        let e = from_params::<Sample>(&params).unwrap_err().to_string();
        assert_eq!(
            e,
            "parameter `steps`: invalid value: integer `-1`, expected usize"
        );
        let mut params = sample();
        params.insert("schedule".into(), Value::Str("linear".into()));
        let e = from_params::<Sample>(&params).unwrap_err().to_string();
        assert!(
            e.starts_with("parameter `schedule`: unknown variant `linear`, expected"),
            "{e}"
        );
        let mut params = sample();
        params.remove("lr");
        let e = from_params::<Sample>(&params).unwrap_err().to_string();
        assert_eq!(e, "internal: parameter `lr` was not provided");
    }

    #[test]
    fn the_shape_lists_fields_and_enum_variants() {
        let shape = ParamsShape::of::<Sample>();
        let enum_ = Some(vec!["cosine", "linear-decay"]);
        // The fields after a `NonZero` one are probed too.
        let want: Vec<(&str, Option<Vec<&str>>)> = vec![
            ("batch", None),
            ("lr", None),
            ("steps", None),
            ("schedule", enum_.clone()),
            ("maybe", enum_.clone()),
            ("kinds", enum_),
            ("model", None),
            ("type", None),
            ("weights", None),
            ("any", None),
            ("file", None),
            ("text", None),
        ];
        let got: Vec<(&str, Option<Vec<&str>>)> = shape
            .fields
            .into_iter()
            .map(|f| (f.name, f.variants))
            .collect();
        assert_eq!(got, want);
        assert_eq!(variants_of::<Schedule>(), vec!["cosine", "linear-decay"]);
    }
}
