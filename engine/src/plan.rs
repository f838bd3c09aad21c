//! `flow plan`: which nodes are cached, which will run, and why.
//!
//! The plan walks the graph like a run does, without running anything: a
//! node whose upstream nodes are all cached gets its key computed and
//! looked up; a miss is explained by comparing its key parts with those
//! the last run of this pipeline recorded for the same node (a param or
//! argument, an input file, an upstream output, the op version). A node
//! below one that will run cannot have its key known yet ("upstream X will
//! run"): with early cutoff it may still turn out cached.

use std::collections::{BTreeMap, BTreeSet};

use crate::op::Registry;
use serde::Serialize;

use crate::executor::pipeline_id;
use crate::graph::{arg_refs, Graph};
use crate::ir::{Arg, Node, Pipeline};
use crate::keys::{unit_key, KeyParts};
use crate::memo::InputMemo;
use crate::resolve::{NodeValue, Resolver, UnitSpec};
use crate::store::{RunNode, Store};

/// The plan for one node or map element.
#[derive(Clone, Debug, Serialize)]
pub struct PlanEntry {
    /// `name` or `name[i]`.
    pub node: String,
    pub op: String,
    /// `cached` or `run`; `failed` when its arguments cannot be resolved
    /// (a missing input file, say).
    pub status: &'static str,
    /// Known when the upstream nodes are cached.
    pub key: Option<String>,
    /// Why it will run (empty when cached).
    pub why: Vec<String>,
}

/// What the last runs of a pipeline recorded, by display name (newest wins).
pub fn previous_nodes(store: &Store, pipeline: &Pipeline) -> BTreeMap<String, RunNode> {
    let id = pipeline_id(&pipeline.path);
    let mut prev = BTreeMap::new();
    // The newest records suffice: stop once every node has a record, or
    // after a bounded number of this pipeline's runs.
    let wanted = pipeline.nodes.len();
    for run in store
        .runs_newest_first()
        .filter(|r| r.pipeline == id)
        .take(50)
    {
        for n in run.nodes {
            if n.parts.is_some() {
                prev.entry(n.name.clone()).or_insert(n);
            }
        }
        let plain = pipeline
            .nodes
            .iter()
            .filter(|n| n.map.is_none() && prev.contains_key(&n.name))
            .count();
        if plain == wanted {
            break;
        }
    }
    prev
}

impl PlanEntry {
    /// A node that cannot be planned, and why.
    fn failed(node: &Node, why: String) -> PlanEntry {
        PlanEntry {
            node: node.name.clone(),
            op: node.op.clone(),
            status: "failed",
            key: None,
            why: vec![why],
        }
    }
}

/// Computes the plan. `store` may not exist yet (nothing is cached then).
pub fn plan(p: &Pipeline, registry: &Registry, store: &Store) -> miette::Result<Vec<PlanEntry>> {
    let graph = Graph::build(p)?;
    let mut memo = InputMemo::load(&store.root);
    let prev = previous_nodes(store, p);
    let mut done: BTreeMap<String, NodeValue> = BTreeMap::new();
    let mut will_run: BTreeSet<usize> = BTreeSet::new();
    let mut entries = Vec::new();
    for &i in &graph.order {
        let node = &p.nodes[i];
        let upstream_running: Vec<&str> = graph.deps[i]
            .iter()
            .filter(|d| will_run.contains(d))
            .map(|&d| p.nodes[d].name.as_str())
            .collect();
        if !upstream_running.is_empty() {
            will_run.insert(i);
            entries.push(PlanEntry {
                node: node.name.clone(),
                op: node.op.clone(),
                status: "run",
                key: None,
                why: upstream_running
                    .iter()
                    .map(|u| format!("upstream {u} will run"))
                    .collect(),
            });
            continue;
        }
        let Some(op) = registry.get(&node.op) else {
            will_run.insert(i);
            entries.push(PlanEntry::failed(node, format!("unknown op `{}`", node.op)));
            continue;
        };
        let spec = op.spec();
        let mut resolver = Resolver::new(p, &done, &mut memo);
        let units = resolver.units(node);
        let units = match units {
            Ok(u) => u,
            Err(report) => {
                will_run.insert(i);
                entries.push(PlanEntry::failed(node, report.to_string()));
                continue;
            }
        };
        let mut values = Vec::new();
        let mut all_cached = true;
        for UnitSpec {
            display,
            args,
            element,
            ..
        } in units
        {
            let key = unit_key(spec.name, spec.version, &args, element.as_ref());
            match store.lookup(&key.key) {
                Some(meta) => {
                    values.push(NodeValue::from_meta(store, &meta));
                    entries.push(PlanEntry {
                        node: display,
                        op: node.op.clone(),
                        status: "cached",
                        key: Some(key.key),
                        why: vec![],
                    });
                }
                None => {
                    all_cached = false;
                    let why = explain(node, &key.parts, prev.get(&display));
                    entries.push(PlanEntry {
                        node: display,
                        op: node.op.clone(),
                        status: "run",
                        key: Some(key.key),
                        why,
                    });
                }
            }
        }
        if all_cached {
            let value = if node.map.is_some() {
                NodeValue::from_elements(&values)
            } else {
                match values.into_iter().next() {
                    Some(v) => v,
                    None => continue,
                }
            };
            done.insert(node.name.clone(), value);
        } else {
            will_run.insert(i);
        }
    }
    Ok(entries)
}

/// Why a unit whose key is not in the store will run.
pub fn explain(node: &Node, parts: &KeyParts, prev: Option<&RunNode>) -> Vec<String> {
    let Some(prev) = prev else {
        return vec!["never run".to_string()];
    };
    let Some(old) = &prev.parts else {
        return vec!["never run".to_string()];
    };
    let mut why = Vec::new();
    let labels: BTreeSet<&String> = parts.keys().chain(old.keys()).collect();
    for label in labels {
        let (a, b) = (old.get(label), parts.get(label));
        if a == b {
            continue;
        }
        why.push(describe(
            node,
            label,
            a.map(String::as_str),
            b.map(String::as_str),
        ));
    }
    if why.is_empty() {
        why.push(match prev.status.as_str() {
            "failed" => "failed last time".to_string(),
            "skipped" => "skipped last time".to_string(),
            _ => {
                "artifact missing from the cache (removed by gc, or a different cache)".to_string()
            }
        });
    }
    why
}

/// The words of a key part's text that carry one of `tags` (`file:HASH`,
/// `artifact:HASH`, ...): what an argument's inputs or upstream outputs were.
fn tagged_words(text: &str, tags: &[&str]) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|w| tags.iter().any(|t| w.starts_with(t)))
        .map(str::to_string)
        .collect()
}

fn short(text: &str) -> String {
    const MAX: usize = 60;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

fn inputs_in(arg: &Arg, out: &mut Vec<String>) {
    arg.for_each_leaf(&mut |a| {
        if let Arg::Input { path, .. } = a {
            out.push(path.display().to_string())
        }
    })
}

fn params_in(arg: &Arg, out: &mut Vec<String>) {
    arg.for_each_leaf(&mut |a| {
        if let Arg::Param { name, .. } = a {
            out.push(name.clone())
        }
    })
}

fn describe(node: &Node, label: &str, old: Option<&str>, new: Option<&str>) -> String {
    match label {
        "op" => format!(
            "op changed: {} → {}",
            old.unwrap_or("?"),
            new.unwrap_or("?")
        ),
        "version" => format!(
            "op `{}` version changed: {} → {}",
            node.op,
            old.unwrap_or("?"),
            new.unwrap_or("?")
        ),
        "element" => format!(
            "map element changed: {} → {}",
            short(old.unwrap_or("none")),
            short(new.unwrap_or("none"))
        ),
        _ => {
            let name = label.strip_prefix("arg.").unwrap_or(label);
            let (Some(old), Some(new)) = (old, new) else {
                return format!("argument `{name}` added or removed");
            };
            let mut reasons = Vec::new();
            if let Some(arg) = node.args.get(name) {
                let mut params = Vec::new();
                params_in(arg, &mut params);
                for prm in params {
                    let needle = format!("param {prm}=");
                    let pick = |t: &str| {
                        t.find(&needle).map(|at| {
                            let rest = &t[at + needle.len()..];
                            rest.split([',', ']', '}', ')'])
                                .next()
                                .unwrap_or(rest)
                                .to_string()
                        })
                    };
                    let (a, b) = (pick(old), pick(new));
                    if a != b {
                        reasons.push(format!(
                            "param `{prm}` changed: {} → {}",
                            short(&a.unwrap_or_default()),
                            short(&b.unwrap_or_default())
                        ));
                    }
                }
                let mut files = Vec::new();
                inputs_in(arg, &mut files);
                let inputs = |t| tagged_words(t, &["file:", "dir:"]);
                if !files.is_empty() && inputs(old) != inputs(new) {
                    reasons.push(format!(
                        "input changed: {} (arg `{name}`)",
                        files.join(", ")
                    ));
                }
                let mut ups = BTreeSet::new();
                arg_refs(arg, &mut ups);
                let artifacts = |t| tagged_words(t, &["artifact:", "path:"]);
                if !ups.is_empty() && artifacts(old) != artifacts(new) {
                    let names: Vec<&str> = ups.into_iter().collect();
                    reasons.push(format!(
                        "output of upstream {} changed (arg `{name}`)",
                        names.join(", ")
                    ));
                }
            }
            if reasons.is_empty() {
                format!("argument `{name}` changed: {} → {}", short(old), short(new))
            } else {
                reasons.join("; ")
            }
        }
    }
}
