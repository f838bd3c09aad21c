//! The dependency graph of a pipeline: one vertex per node, an edge
//! `a -> b` when `b` refers to `a` (an argument, a template placeholder or
//! a map's `over` list).

use std::collections::BTreeSet;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::ir::{Arg, Node, Pipeline};

/// The graph, with the nodes in a topological order.
pub struct Graph {
    pub dag: DiGraph<usize, ()>,
    /// Node index in `Pipeline::nodes` → vertex.
    pub vertex: Vec<NodeIndex>,
    /// Indices into `Pipeline::nodes`, each after all of its dependencies.
    pub order: Vec<usize>,
    /// For each node, the nodes it depends on (indices, sorted).
    pub deps: Vec<Vec<usize>>,
    /// For each node, the nodes that depend on it.
    pub dependents: Vec<Vec<usize>>,
}

/// Errors building the graph (the checked IR should never produce them).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GraphError {
    #[error("node `{node}` refers to `{missing}`, which is not a node")]
    UnknownNode { node: String, missing: String },
    #[error("the pipeline has a cycle through node `{0}`")]
    Cycle(String),
}

/// Names of the nodes an argument refers to.
pub fn arg_refs<'a>(arg: &'a Arg, out: &mut BTreeSet<&'a str>) {
    arg.for_each_leaf(&mut |a| {
        if let Arg::Node { node, .. } = a {
            out.insert(node.as_str());
        }
    })
}

/// Names of the nodes a node refers to.
pub fn node_refs(node: &Node) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for a in node.args.values() {
        arg_refs(a, &mut out);
    }
    if let Some(m) = &node.map {
        arg_refs(&m.over, &mut out);
    }
    out
}

/// The pipeline cut down to `targets` and the nodes they need, in the same
/// order (`flow run FILE TARGET...`). Unknown targets are an error naming
/// the closest node.
pub fn restrict_to(p: &Pipeline, targets: &[String]) -> Result<Pipeline, String> {
    if targets.is_empty() {
        return Ok(p.clone());
    }
    let index = p.node_index();
    let mut keep = vec![false; p.nodes.len()];
    let mut stack = Vec::new();
    for t in targets {
        match index.get(t.as_str()) {
            Some(&i) => stack.push(i),
            None => {
                let help = crate::lang::suggest(t, index.keys().copied(), || {
                    "`flow graph FILE` lists the nodes".to_string()
                });
                return Err(format!("no node `{t}` in the pipeline; {help}"));
            }
        }
    }
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut keep[i], true) {
            continue;
        }
        for r in node_refs(&p.nodes[i]) {
            if let Some(&j) = index.get(r) {
                stack.push(j);
            }
        }
    }
    let mut out = p.clone();
    out.nodes = p
        .nodes
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(out)
}

impl Graph {
    pub fn build(p: &Pipeline) -> Result<Graph, GraphError> {
        let mut dag = DiGraph::new();
        let index = p.node_index();
        let vertex: Vec<NodeIndex> = (0..p.nodes.len()).map(|i| dag.add_node(i)).collect();
        let mut deps = vec![Vec::new(); p.nodes.len()];
        let mut dependents = vec![Vec::new(); p.nodes.len()];
        for (i, n) in p.nodes.iter().enumerate() {
            for r in node_refs(n) {
                let j = *index.get(r).ok_or_else(|| GraphError::UnknownNode {
                    node: n.name.clone(),
                    missing: r.to_string(),
                })?;
                dag.add_edge(vertex[j], vertex[i], ());
                deps[i].push(j);
                dependents[j].push(i);
            }
        }
        let order = toposort(&dag, None)
            .map_err(|c| GraphError::Cycle(p.nodes[dag[c.node_id()]].name.clone()))?
            .into_iter()
            .map(|v| dag[v])
            .collect();
        Ok(Graph {
            dag,
            vertex,
            order,
            deps,
            dependents,
        })
    }

    /// Every node that depends on `i`, directly or not.
    pub fn downstream(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(x) = stack.pop() {
            for &d in &self.dependents[x] {
                if seen.insert(d) {
                    stack.push(d);
                }
            }
        }
        seen
    }

    /// Graphviz text.
    pub fn to_dot(&self, p: &Pipeline) -> String {
        let mut s = String::from("digraph flow {\n  rankdir=LR;\n  node [shape=box];\n");
        for n in &p.nodes {
            let label = if n.map.is_some() {
                format!("{}\\n{} (map)", n.name, n.op)
            } else {
                format!("{}\\n{}", n.name, n.op)
            };
            s.push_str(&format!("  \"{}\" [label=\"{}\"];\n", n.name, label));
        }
        for (i, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                s.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    p.nodes[d].name, p.nodes[i].name
                ));
            }
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid flowchart text.
    pub fn to_mermaid(&self, p: &Pipeline) -> String {
        let mut s = String::from("flowchart LR\n");
        for (i, n) in p.nodes.iter().enumerate() {
            let suffix = if n.map.is_some() { " (map)" } else { "" };
            s.push_str(&format!("  n{i}[\"{}<br/>{}{}\"]\n", n.name, n.op, suffix));
        }
        for (i, ds) in self.deps.iter().enumerate() {
            for &d in ds {
                s.push_str(&format!("  n{d} --> n{i}\n"));
            }
        }
        s
    }
}
