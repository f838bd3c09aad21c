//! Type names for messages, and which static types an argument accepts.

use crate::op::{Type, Value};

/// "an integer", "a list of floats", ... for messages.
pub fn type_name(ty: &Type) -> String {
    match ty {
        Type::Bool => "a boolean".into(),
        Type::Int => "an integer".into(),
        Type::Float => "a number".into(),
        Type::Str => "a string".into(),
        Type::Template => "a template string".into(),
        Type::File => "a file".into(),
        Type::Dir => "a directory".into(),
        Type::Model => "a model".into(),
        Type::List(inner) => format!("a list of {}", plural(inner)),
        Type::Record => "a record".into(),
        Type::Enum(options) => format!(
            "one of {}",
            options
                .iter()
                .map(|o| format!("\"{o}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::Either(a, b) => format!("{} or {}", type_name(a), type_name(b)),
        Type::Any => "any value".into(),
    }
}

fn plural(ty: &Type) -> String {
    match ty {
        Type::Bool => "booleans".into(),
        Type::Int => "integers".into(),
        Type::Float => "numbers".into(),
        Type::Str => "strings".into(),
        Type::Template => "template strings".into(),
        Type::File => "files".into(),
        Type::Dir => "directories".into(),
        Type::Model => "models".into(),
        Type::List(inner) => format!("lists of {}", plural(inner)),
        Type::Record => "records".into(),
        Type::Enum(_) | Type::Either(..) => format!("({})", type_name(ty)),
        Type::Any => "values".into(),
    }
}

/// "a string", "an integer", ... for a value.
pub fn value_name(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "a boolean",
        Value::Int(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::List(_) => "a list",
        Value::Record(_) => "a record",
        Value::Path(_) => "a path",
    }
}

/// Whether something of static type `src` may be passed where `dst` is
/// declared. `Any` on either side defers the check to the op.
pub fn assignable(src: &Type, dst: &Type) -> bool {
    match (src, dst) {
        (_, Type::Any) | (Type::Any, _) => true,
        (Type::Either(a, b), d) => assignable(a, d) && assignable(b, d),
        (s, Type::Either(a, b)) => assignable(s, a) || assignable(s, b),
        (Type::Int, Type::Float) => true,
        (Type::Model, Type::Dir) => true,
        (Type::Str | Type::Template | Type::Enum(_), Type::Str | Type::Template) => true,
        (Type::Str | Type::Template, Type::Enum(_)) => true,
        (Type::Enum(a), Type::Enum(b)) => a.iter().all(|x| b.contains(x)),
        (Type::List(a), Type::List(b)) => assignable(a, b),
        (a, b) => a == b,
    }
}

/// Whether a `dir("...")` input may be passed where `ty` is declared.
pub fn accepts_dir(ty: &Type) -> bool {
    match ty {
        Type::Dir | Type::Model | Type::Any => true,
        Type::Either(a, b) => accepts_dir(a) || accepts_dir(b),
        _ => false,
    }
}

/// Whether a `file("...")` input may be passed where `ty` is declared.
pub fn accepts_file(ty: &Type) -> bool {
    match ty {
        Type::File | Type::Any => true,
        Type::Either(a, b) => accepts_file(a) || accepts_file(b),
        _ => false,
    }
}

/// Checks a known value (a param's, or an element a map runs over) against
/// a type; returns the value with ints widened where a float is wanted.
pub fn conform(value: &Value, ty: &Type) -> Option<Value> {
    match (value, ty) {
        (v, Type::Any) => Some(v.clone()),
        (v, Type::Either(a, b)) => conform(v, a).or_else(|| conform(v, b)),
        (Value::Bool(_), Type::Bool)
        | (Value::Int(_), Type::Int)
        | (Value::Float(_), Type::Float)
        | (Value::Str(_), Type::Str | Type::Template)
        | (Value::Record(_), Type::Record) => Some(value.clone()),
        (Value::Int(i), Type::Float) => Some(Value::Float(*i as f64)),
        (Value::Str(s), Type::Enum(options)) if options.contains(s) => Some(value.clone()),
        (Value::List(items), Type::List(inner)) => items
            .iter()
            .map(|v| conform(v, inner))
            .collect::<Option<Vec<_>>>()
            .map(Value::List),
        _ => None,
    }
}

/// Whether an override value fits the type of a param's default: same kind,
/// ints widen to floats, list elements follow the default's first element.
pub fn conform_to_default(default: &Value, new: &Value) -> Option<Value> {
    match (default, new) {
        (Value::Float(_), Value::Int(i)) => Some(Value::Float(*i as f64)),
        (Value::List(d), Value::List(items)) => match d.first() {
            None => Some(new.clone()),
            Some(first) => items
                .iter()
                .map(|v| conform_to_default(first, v))
                .collect::<Option<Vec<_>>>()
                .map(Value::List),
        },
        (d, n) if std::mem::discriminant(d) == std::mem::discriminant(n) => Some(n.clone()),
        _ => None,
    }
}
