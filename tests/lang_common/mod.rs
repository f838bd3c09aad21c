//! A registry of fake ops for the language tests: the front end only reads
//! specs, so the ops never run.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use flow_engine::ir::Pipeline;
use flow_engine::lang;
use flow_engine::op::Registry;
use flow_engine::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value,
};

struct FakeOp(OpSpec);

impl Op for FakeOp {
    fn spec(&self) -> OpSpec {
        self.0.clone()
    }
    fn run(&self, _: &OpContext) -> OpResult<Outputs> {
        Ok(BTreeMap::new())
    }
}

fn op(name: &'static str, params: Vec<Param>, produces: Type, outputs: Vec<Output>) -> Arc<dyn Op> {
    Arc::new(FakeOp(OpSpec {
        name,
        version: 1,
        doc: "",
        params,
        produces,
        outputs,
        resources: Resources::ONE_THREAD,
    }))
}

fn out(name: &'static str, ty: Type) -> Output {
    Output { name, ty, doc: "" }
}

fn list(t: Type) -> Type {
    Type::List(Box::new(t))
}

/// gen(cmd: template, n: int = 1) -> dir {nums: file, parts: [file]}
/// train(base: model, data: dir, lr: float = 1e-5, epochs: int = 1,
///       mode: "full"|"lora" = "full") -> model {checkpoints: [model], log: file}
/// slerp(base: model, other: model, t: float | [float]) -> model
/// count(input: file, label: string = "") -> dir {total: int}
/// collect(items: [dir], meta: record = {}, tags: [string] = [],
///         flag: bool = false, extra: any = 0) -> dir
pub fn registry() -> Registry {
    Registry::from_ops(vec![
        op(
            "gen",
            vec![
                Param::required("cmd", Type::Template, "the command"),
                Param::optional("n", Type::Int, Value::Int(1), "how many"),
            ],
            Type::Dir,
            vec![out("nums", Type::File), out("parts", list(Type::File))],
        ),
        op(
            "train",
            vec![
                Param::required("base", Type::Model, "the base model"),
                Param::required("data", Type::Dir, "training data"),
                Param::optional("lr", Type::Float, Value::Float(1e-5), "learning rate"),
                Param::optional("epochs", Type::Int, Value::Int(1), "epochs"),
                Param::optional(
                    "mode",
                    Type::Enum(vec!["full".into(), "lora".into()]),
                    Value::Str("full".into()),
                    "mode",
                ),
            ],
            Type::Model,
            vec![
                out("checkpoints", list(Type::Model)),
                out("log", Type::File),
            ],
        ),
        op(
            "slerp",
            vec![
                Param::required("base", Type::Model, ""),
                Param::required("other", Type::Model, ""),
                Param::required(
                    "t",
                    Type::Either(Box::new(Type::Float), Box::new(list(Type::Float))),
                    "the interpolation weight",
                )
                .within(0.0, 1.0),
            ],
            Type::Model,
            vec![],
        ),
        op(
            "count",
            vec![
                Param::required("input", Type::File, "the file to count"),
                Param::optional("label", Type::Str, Value::Str(String::new()), ""),
            ],
            Type::Dir,
            vec![out("total", Type::Int)],
        ),
        op(
            "collect",
            vec![
                Param::required("items", list(Type::Dir), ""),
                Param::optional("meta", Type::Record, Value::Record(BTreeMap::new()), ""),
                Param::optional("tags", list(Type::Str), Value::List(vec![]), ""),
                Param::optional("flag", Type::Bool, Value::Bool(false), ""),
                Param::optional("extra", Type::Any, Value::Int(0), ""),
            ],
            Type::Dir,
            vec![],
        ),
    ])
}

/// Loads `text` as if it were the file `dir/main.flow`.
pub fn load_in(dir: &Path, text: &str, sets: &[&str]) -> Result<Pipeline, lang::Diagnostics> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    lang::load_str(&dir.join("main.flow"), text, &sets, &registry())
}

/// Loads `text` as `/tmp/flow-lang-test/main.flow` (no imports).
pub fn load(text: &str, sets: &[&str]) -> Result<Pipeline, lang::Diagnostics> {
    load_in(Path::new("/flow-lang-test"), text, sets)
}

/// The rendered diagnostics of a pipeline that must fail.
pub fn errors(text: &str, sets: &[&str]) -> String {
    match load(text, sets) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(d) => d.render(),
    }
}

/// Whitespace collapsed, so wrapped help lines still match.
pub fn squash(s: &str) -> String {
    // `│` is miette's gutter on wrapped lines.
    s.replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A pipeline with every span zeroed, to compare pipelines parsed from
/// differently laid-out text.
pub fn erase_spans(p: &Pipeline) -> (Vec<(String, Value)>, Vec<flow_engine::ir::Node>) {
    use flow_engine::ir::{Arg, Span, TemplatePart};
    let zero = Span {
        file: 0,
        span: (0, 0).into(),
    };
    fn walk(arg: &mut Arg, zero: Span) {
        match arg {
            Arg::Node { span, .. } | Arg::Input { span, .. } => *span = zero,
            Arg::List(items) => items.iter_mut().for_each(|a| walk(a, zero)),
            Arg::Record(fields) => fields.values_mut().for_each(|a| walk(a, zero)),
            Arg::Template(parts) => {
                for part in parts {
                    if let TemplatePart::Arg(a) = part {
                        walk(a, zero);
                    }
                }
            }
            Arg::Lit(_) | Arg::Param { .. } | Arg::MapVar => {}
        }
    }
    let params = p
        .params
        .values()
        .map(|d| (d.name.clone(), d.value.clone()))
        .collect();
    let mut nodes = p.nodes.clone();
    for n in &mut nodes {
        n.span = zero;
        n.args.values_mut().for_each(|a| walk(a, zero));
        if let Some(m) = &mut n.map {
            walk(&mut m.over, zero);
        }
    }
    (params, nodes)
}
