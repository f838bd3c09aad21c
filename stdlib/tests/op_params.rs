//! Each op's params are declared twice in one place: its spec (what
//! `flow check` checks, with spans) and the serde struct the op reads them
//! into (`ctx.params()`). This test holds the two together for every op of
//! the registry: the same names, and for each enum param the same strings.

use std::collections::BTreeSet;

use flow_stdlib::op::{Op, OpSpec, ParamsShape, Type};
use serde::Deserialize;

/// The enum strings of a param's type: its own, or its list elements'.
fn enum_strings(ty: &Type) -> Option<&Vec<String>> {
    match ty {
        Type::Enum(options) => Some(options),
        Type::List(inner) => enum_strings(inner),
        _ => None,
    }
}

/// What differs between an op's spec and its params struct; empty: nothing.
fn mismatches(spec: &OpSpec, shape: &ParamsShape) -> Vec<String> {
    let mut out = Vec::new();
    let declared: BTreeSet<&str> = spec.params.iter().map(|p| p.name).collect();
    let fields: BTreeSet<&str> = shape.fields.iter().map(|f| f.name).collect();
    for name in declared.difference(&fields) {
        out.push(format!("param `{name}` has no field in the params struct"));
    }
    for name in fields.difference(&declared) {
        out.push(format!("field `{name}` is not a param of the spec"));
    }
    for field in &shape.fields {
        let Some(param) = spec.params.iter().find(|p| p.name == field.name) else {
            continue;
        };
        let declared = enum_strings(&param.ty).map(|v| v.iter().map(String::as_str).collect());
        if declared != field.variants {
            out.push(format!(
                "param `{}`: the spec's strings are {declared:?}, the field's enum has {:?}",
                field.name, field.variants
            ));
        }
        if let (Some(options), Some(flow_stdlib::op::Value::Str(default))) =
            (enum_strings(&param.ty), &param.default)
        {
            if !options.contains(default) {
                out.push(format!(
                    "param `{}`: default {default:?} is not one of {options:?}",
                    field.name
                ));
            }
        }
    }
    out
}

#[test]
fn every_op_reads_exactly_its_declared_params() {
    let registry = flow_stdlib::registry();
    let mut problems = Vec::new();
    for (name, op) in registry.iter() {
        let spec = op.spec();
        match op.params_shape() {
            Some(shape) => {
                for m in mismatches(&spec, &shape) {
                    problems.push(format!("{name}: {m}"));
                }
            }
            None => problems.push(format!(
                "{name}: reads its params by name; give it a params struct (`Op::params_shape`)"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check itself catches a param added to one side only, and an enum
/// whose strings differ.
#[test]
fn a_param_on_one_side_only_is_found() {
    use flow_stdlib::op::{OpContext, OpResult, Outputs, Param, Resources, Value};

    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Full,
        Lora,
    }
    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Params {
        lr: f64,
        mode: Mode,
        extra: bool,
    }
    struct Fake;
    impl Op for Fake {
        fn spec(&self) -> OpSpec {
            OpSpec {
                name: "fake",
                version: 1,
                doc: "",
                params: vec![
                    Param::required("lr", Type::Float, ""),
                    Param::optional(
                        "mode",
                        Type::Enum(vec!["full".into(), "qlora".into()]),
                        Value::Str("full".into()),
                        "",
                    ),
                    Param::required("seed", Type::Int, ""),
                ],
                produces: Type::Dir,
                outputs: vec![],
                resources: Resources::ONE_THREAD,
            }
        }
        fn run(&self, _: &OpContext) -> OpResult<Outputs> {
            Ok(Outputs::new())
        }
    }
    let found = mismatches(&Fake.spec(), &ParamsShape::of::<Params>());
    assert_eq!(
        found,
        vec![
            "param `seed` has no field in the params struct".to_string(),
            "field `extra` is not a param of the spec".to_string(),
            "param `mode`: the spec's strings are Some([\"full\", \"qlora\"]), the field's enum has Some([\"full\", \"lora\"])".to_string(),
        ]
    );
}
