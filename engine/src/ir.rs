//! The checked pipeline: what the language front end (`lang`) hands to the
//! graph, key and executor layers.
//!
//! Everything here has passed every check: ops exist, arguments are known,
//! present and well typed, references resolve, names are unique, there is no
//! cycle. Spans point into [`Sources`] for diagnostics that arise later (a
//! missing `file()` input, say).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::op::Value;
use miette::SourceSpan;

/// Index of a source file in [`Sources`].
pub type FileId = usize;

/// A place in a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: FileId,
    pub span: SourceSpan,
}

/// One loaded `.flow` file (the main file and every import).
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// All source files of a pipeline, for diagnostics.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub files: Vec<SourceFile>,
}

/// A checked pipeline.
#[derive(Clone, Debug)]
pub struct Pipeline {
    /// The main file's path; relative `file()`/`dir()` paths were resolved
    /// against the directory of the file that names them.
    pub path: PathBuf,
    pub sources: Sources,
    /// Every param with its effective value (default or `--set`).
    pub params: BTreeMap<String, ParamDef>,
    /// Nodes in source order (imports first). Names are unique.
    pub nodes: Vec<Node>,
}

impl Pipeline {
    /// Node name → index into `nodes`.
    pub fn node_index(&self) -> HashMap<&str, usize> {
        node_index(&self.nodes)
    }
}

/// Node name → index into `nodes`.
pub fn node_index(nodes: &[Node]) -> HashMap<&str, usize> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamDef {
    pub name: String,
    pub value: Value,
    /// Where the param is declared.
    pub span: Span,
    /// Whether `--set` overrode the default.
    pub overridden: bool,
}

/// A node: one op call, or a map of one op call over a list.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub span: Span,
    pub op: String,
    /// Every parameter of the op, defaults filled in.
    pub args: BTreeMap<String, Arg>,
    /// `name = [op(...) for VAR in LIST]`: the op runs once per element of
    /// `over`, each element its own cached node; `Arg::MapVar` in `args`
    /// stands for the element. The node's value is the list of the elements'
    /// artifact directories.
    pub map: Option<MapOver>,
    /// A per-node device request (`device: "cuda"` in the call); `None`
    /// leaves the choice to `flow run --device`.
    pub device: Option<DeviceRequest>,
    /// Per-node resources (`resources: {cpus: 8, mem: "32G", ...}` in the
    /// call): what the node asks of a scheduler, overriding the op's
    /// declaration. Like the device, never part of a key.
    pub resources: NodeResources,
}

/// A node's `resources:` record; every field optional (`None`: the op's
/// declaration, then the run's defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// CPU threads (locally the op's thread count; on Slurm `--cpus-per-task`).
    pub cpus: Option<usize>,
    /// Memory in MiB (Slurm `--mem`).
    pub mem_mb: Option<u64>,
    /// GPUs (Slurm `--gres=gpu:N`).
    pub gpus: Option<u32>,
    /// Time limit in minutes (Slurm `--time`).
    pub time_min: Option<u64>,
    /// Slurm partition for this node (overrides `--partition`).
    pub partition: Option<String>,
    /// Most shard tasks of a sharded op (`Op::sharding`): locally parts on
    /// the unit's threads, on Slurm the tasks of its job array.
    pub shards: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MapOver {
    pub var: String,
    pub over: Arg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    Auto,
    Cpu,
    Cuda(Option<usize>),
}

/// A resolved argument expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// A literal (after `--set`, params are not folded in: see `Param`).
    Lit(Value),
    /// A reference to a param, kept by name so `flow plan` can say which
    /// param changed.
    Param {
        name: String,
        value: Value,
    },
    /// A node's artifact directory, or one of its named outputs
    /// (`cpt.checkpoints`).
    Node {
        node: String,
        field: Option<String>,
        span: Span,
    },
    /// `file("path")` or `dir("path")`: an input hashed by content.
    Input {
        kind: InputKind,
        path: PathBuf,
        span: Span,
    },
    /// The current element inside a map node.
    MapVar,
    List(Vec<Arg>),
    Record(BTreeMap<String, Arg>),
    /// A `Type::Template` string split into text and placeholders.
    Template(Vec<TemplatePart>),
}

impl Arg {
    /// Calls `leaf` with every argument inside this one that holds no
    /// others (lists, records and templates are walked into, in order).
    pub fn for_each_leaf<'a>(&'a self, leaf: &mut impl FnMut(&'a Arg)) {
        match self {
            Arg::List(items) => items.iter().for_each(|a| a.for_each_leaf(leaf)),
            Arg::Record(fields) => fields.values().for_each(|a| a.for_each_leaf(leaf)),
            Arg::Template(parts) => {
                for part in parts {
                    if let TemplatePart::Arg(a) = part {
                        a.for_each_leaf(leaf);
                    }
                }
            }
            Arg::Lit(_)
            | Arg::Param { .. }
            | Arg::Node { .. }
            | Arg::Input { .. }
            | Arg::MapVar => leaf(self),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    File,
    Dir,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    Text(String),
    /// `{out}`: the node's output directory.
    Out,
    /// `{p}` for a param, `{n}` for a node (an edge), `{n.field}`.
    Arg(Arg),
}
