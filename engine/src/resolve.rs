//! Resolving a node's arguments once its upstream nodes are done: node
//! references become artifact paths (identified by content hash), `file()`
//! and `dir()` inputs are hashed, map elements are substituted.

use std::collections::BTreeMap;
use std::path::Path;

use crate::op::Value;
use miette::{LabeledSpan, NamedSource};

use crate::ir::{Arg, InputKind, MapOver, Node, Pipeline, Span, TemplatePart};
use crate::keys::{value_from_json, RVal, TPart};
use crate::memo::{InputMemo, InputStamp};
use crate::store::{Meta, Store};

/// The value of a finished node as its dependents see it.
#[derive(Clone, Debug)]
pub struct NodeValue {
    /// The artifact directory (a list of them for a map node).
    pub whole: RVal,
    /// Named outputs (for a map node: each a list over the elements).
    pub fields: BTreeMap<String, RVal>,
}

impl NodeValue {
    /// The value of a complete artifact.
    pub fn from_meta(store: &Store, meta: &Meta) -> NodeValue {
        let out = store.out_dir(&meta.key);
        let h = &meta.content_hash;
        let whole = RVal::Path {
            path: out.clone(),
            key: format!("artifact:{h}"),
        };
        let mut fields = BTreeMap::new();
        if let serde_json::Value::Object(m) = &meta.outputs {
            for (name, j) in m {
                let v = value_from_json(j);
                fields.insert(name.clone(), output_rval(&v, &out, h, &meta.path_hashes));
            }
        }
        NodeValue { whole, fields }
    }

    /// The value of a map node from its elements' values.
    pub fn from_elements(elements: &[NodeValue]) -> NodeValue {
        let whole = RVal::List(elements.iter().map(|e| e.whole.clone()).collect());
        let mut names: Vec<&String> = elements.iter().flat_map(|e| e.fields.keys()).collect();
        names.sort();
        names.dedup();
        let mut fields = BTreeMap::new();
        for name in names {
            let list = elements
                .iter()
                .map(|e| {
                    e.fields
                        .get(name)
                        .cloned()
                        .unwrap_or(RVal::Lit(Value::Str(String::new())))
                })
                .collect();
            fields.insert(name.clone(), RVal::List(list));
        }
        NodeValue { whole, fields }
    }
}

/// An output value: relative paths become absolute inside the artifact,
/// identified in keys by their own hash (`path:HASH`; `artifact:HASH/rel`
/// for artifacts made before path hashes were recorded).
fn output_rval(v: &Value, out: &Path, h: &str, path_hashes: &BTreeMap<String, String>) -> RVal {
    match v {
        Value::Path(rel) => {
            let rel = rel.to_string_lossy();
            let key = match path_hashes.get(rel.as_ref()) {
                Some(ph) => format!("path:{ph}"),
                None => format!("artifact:{h}/{rel}"),
            };
            RVal::Path {
                path: out.join(rel.as_ref()),
                key,
            }
        }
        Value::List(items) => RVal::List(
            items
                .iter()
                .map(|i| output_rval(i, out, h, path_hashes))
                .collect(),
        ),
        Value::Record(f) => RVal::Record(
            f.iter()
                .map(|(k, i)| (k.clone(), output_rval(i, out, h, path_hashes)))
                .collect(),
        ),
        other => RVal::Lit(other.clone()),
    }
}

/// A diagnostic pointing at a span of the pipeline's sources.
pub fn diag_at(p: &Pipeline, span: Span, message: String, help: &str) -> miette::Report {
    if let Some(f) = p.sources.files.get(span.file) {
        if crate::lang::diag::line_too_long_to_show(&f.text, span.span.offset()) {
            // No excerpt: the place as text, as the front end does.
            let (line, column) = crate::lang::diag::line_and_column(&f.text, span.span.offset());
            return miette::miette!(
                help = format!("{help} (the line is too long to show)"),
                "{message}\n  at {}:{line}:{column}",
                f.path.display()
            );
        }
    }
    let label = LabeledSpan::at(span.span, "here");
    let report = miette::miette!(labels = vec![label], help = help.to_string(), "{message}");
    match p.sources.files.get(span.file) {
        Some(f) => report.with_source_code(
            NamedSource::new(f.path.display().to_string(), f.text.clone()).with_language("flow"),
        ),
        None => report,
    }
}

/// One unit of work of a node: the node itself, or one map element.
pub struct UnitSpec {
    /// The element's index (map nodes only).
    pub elem: Option<usize>,
    /// `name` or `name[i]`.
    pub display: String,
    pub args: BTreeMap<String, RVal>,
    /// The element's value (map nodes only).
    pub element: Option<RVal>,
    /// The `file()`/`dir()` inputs as they were when hashed, to be checked
    /// again once the unit has run.
    pub inputs: Vec<InputStamp>,
}

/// Everything resolution needs.
pub struct Resolver<'a> {
    pub pipeline: &'a Pipeline,
    pub done: &'a BTreeMap<String, NodeValue>,
    pub memo: &'a mut InputMemo,
    /// Stamps of the inputs resolved since the last unit was built.
    pub stamps: Vec<InputStamp>,
}

impl<'a> Resolver<'a> {
    pub fn new(
        pipeline: &'a Pipeline,
        done: &'a BTreeMap<String, NodeValue>,
        memo: &'a mut InputMemo,
    ) -> Resolver<'a> {
        Resolver {
            pipeline,
            done,
            memo,
            stamps: Vec::new(),
        }
    }
}

impl Resolver<'_> {
    /// Resolves one argument; `element` stands for `MapVar`.
    pub fn arg(&mut self, node: &Node, arg: &Arg, element: Option<&RVal>) -> miette::Result<RVal> {
        Ok(match arg {
            Arg::Lit(v) => RVal::Lit(v.clone()),
            Arg::Param { name, value } => RVal::Param {
                name: name.clone(),
                value: value.clone(),
            },
            Arg::Node {
                node: up,
                field,
                span,
            } => {
                let value = self.done.get(up).ok_or_else(|| {
                    miette::miette!("internal: node `{up}` used by `{}` is not done", node.name)
                })?;
                match field {
                    None => value.whole.clone(),
                    Some(f) => value.fields.get(f).cloned().ok_or_else(|| {
                        diag_at(
                            self.pipeline,
                            *span,
                            format!("node `{up}` returned no output named `{f}`"),
                            "check the op's documented outputs",
                        )
                    })?,
                }
            }
            Arg::Input { kind, path, span } => {
                let is_dir = *kind == InputKind::Dir;
                let what = if is_dir { "dir" } else { "file" };
                let unreadable = |e: std::io::Error| {
                    diag_at(
                        self.pipeline,
                        *span,
                        format!("input {what} {}: {e}", path.display()),
                        "relative paths are resolved against the directory of the .flow file",
                    )
                };
                // Stamped before hashing: a change during hashing shows too.
                let stamp = InputStamp::take(path).map_err(unreadable)?;
                let key = self.memo.input_key(path, is_dir).map_err(unreadable)?;
                self.stamps.push(stamp);
                let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                RVal::Path { path: abs, key }
            }
            Arg::MapVar => element.cloned().ok_or_else(|| {
                miette::miette!("internal: map variable outside a map in `{}`", node.name)
            })?,
            Arg::List(items) => RVal::List(
                items
                    .iter()
                    .map(|a| self.arg(node, a, element))
                    .collect::<miette::Result<_>>()?,
            ),
            Arg::Record(fields) => RVal::Record(
                fields
                    .iter()
                    .map(|(k, a)| Ok((k.clone(), self.arg(node, a, element)?)))
                    .collect::<miette::Result<_>>()?,
            ),
            Arg::Template(parts) => RVal::Template(
                parts
                    .iter()
                    .map(|p| {
                        Ok(match p {
                            TemplatePart::Text(t) => TPart::Text(t.clone()),
                            TemplatePart::Out => TPart::Out,
                            TemplatePart::Arg(a) => TPart::Val(self.arg(node, a, element)?),
                        })
                    })
                    .collect::<miette::Result<_>>()?,
            ),
        })
    }

    /// All arguments of a node (for one element of a map node).
    pub fn args(
        &mut self,
        node: &Node,
        element: Option<&RVal>,
    ) -> miette::Result<BTreeMap<String, RVal>> {
        node.args
            .iter()
            .map(|(k, a)| Ok((k.clone(), self.arg(node, a, element)?)))
            .collect()
    }

    /// The elements of a map node's `over` list.
    pub fn elements(&mut self, node: &Node, map: &MapOver) -> miette::Result<Vec<RVal>> {
        let over = self.arg(node, &map.over, None)?;
        Ok(match over {
            RVal::List(items) => items,
            RVal::Lit(Value::List(items)) | RVal::Param { value: Value::List(items), .. } => {
                items.into_iter().map(RVal::Lit).collect()
            }
            other => {
                return Err(diag_at(
                    self.pipeline,
                    node.span,
                    format!(
                        "node `{}` maps over a value that is not a list ({})",
                        node.name,
                        other.key_text()
                    ),
                    "`[op(...) for x in LIST]` needs a list: a literal, a param or a node output that is a list",
                ))
            }
        })
    }

    /// The units of a node: one, or one per element of its `over` list.
    pub fn units(&mut self, node: &Node) -> miette::Result<Vec<UnitSpec>> {
        self.stamps.clear();
        match &node.map {
            None => Ok(vec![UnitSpec {
                elem: None,
                display: node.name.clone(),
                args: self.args(node, None)?,
                element: None,
                inputs: std::mem::take(&mut self.stamps),
            }]),
            Some(m) => {
                let elements = self.elements(node, m)?;
                // Inputs in the `over` list reach every element.
                let shared = std::mem::take(&mut self.stamps);
                elements
                    .into_iter()
                    .enumerate()
                    .map(|(k, e)| {
                        let args = self.args(node, Some(&e))?;
                        let mut inputs = shared.clone();
                        inputs.append(&mut self.stamps);
                        Ok(UnitSpec {
                            elem: Some(k),
                            display: format!("{}[{k}]", node.name),
                            args,
                            element: Some(e),
                            inputs,
                        })
                    })
                    .collect()
            }
        }
    }
}
