//! Names, types and the graph: turns parsed files into the checked
//! [`ir::Pipeline`], collecting every error it can find.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::op::Registry;
use crate::op::{OpSpec, Param, Type, Value};
use miette::SourceSpan;

use super::ast::{self, Expr, ExprKind, Rhs, StmtKind, StrLit};
use super::diag::{suggest, DiagSource, LangDiag, MAX_SHOWN};
use super::parse;
use super::types::{
    accepts_dir, accepts_file, assignable, conform, conform_to_default, type_name, value_name,
};
use crate::ir::{
    self, Arg, DeviceRequest, FileId, InputKind, MapOver, NodeResources, ParamDef, Pipeline,
    Sources, Span, TemplatePart,
};

mod bindings;
mod cycles;
mod diagnostics;
mod exprs;
mod literals;
mod names;
mod nodes;
mod resources;
mod templates;

use diagnostics::expr_kind_name;
pub use exprs::collect_nodes;
pub use resources::{parse_mem_mb, parse_time_min};

/// The reserved argument name for a node's device request.
const DEVICE_ARG: &str = "device";
/// The reserved argument name for a node's resources.
const RESOURCES_ARG: &str = "resources";

/// A parsed file of the pipeline.
pub struct ParsedFile {
    /// Absolute, lexically normalised.
    pub path: PathBuf,
    pub src: DiagSource,
    pub ast: ast::File,
    /// The namespace its names are declared in.
    pub scope: ScopeId,
}

/// Index of a namespace in the loader's list of scopes.
pub type ScopeId = usize;
/// The namespace of the main file and its plain imports.
pub const ROOT_SCOPE: ScopeId = 0;

/// A namespace: the root, or one module instance (`import "f" as NAME`),
/// whose names are declared as `NAME.x` (`OUTER.NAME.x` when nested).
pub struct Scope {
    /// `""` for the root.
    pub prefix: String,
    /// The namespace of the importing file; names a module does not
    /// define or bind are looked up there.
    pub parent: Option<ScopeId>,
    /// The `import .. as` statement that made the instance.
    pub origin: Option<ScopeOrigin>,
}

pub struct ScopeOrigin {
    /// The importing file.
    pub file: FileId,
    pub instance: ast::Instance,
}

impl Scope {
    pub fn root() -> Scope {
        Scope {
            prefix: String::new(),
            parent: None,
            origin: None,
        }
    }
}

/// The full name of `name` declared in the namespace with `prefix`.
pub fn qualify(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

enum Decl {
    /// `NAME = other` / `NAME = node.field`.
    Alias {
        file: FileId,
        span: SourceSpan,
        target: ast::Ident,
        /// As written; an instance path (`small.cpt.x`) consumes some.
        fields: Vec<ast::Ident>,
    },
    Param {
        file: FileId,
        span: SourceSpan,
        value: Value,
        overridden: bool,
    },
    Node {
        file: FileId,
        span: SourceSpan,
        spec: Option<OpSpec>,
        is_map: bool,
    },
    /// `NAME = file("path")` / `NAME = dir("path")`: a named input.
    Input {
        file: FileId,
        span: SourceSpan,
        dir: bool,
        path: StrLit,
    },
    /// `import "f" as NAME`: a module instance; its names are `NAME.x`.
    Instance {
        file: FileId,
        span: SourceSpan,
        scope: ScopeId,
    },
}

impl Decl {
    fn place(&self) -> (FileId, SourceSpan) {
        match self {
            Decl::Param { file, span, .. }
            | Decl::Node { file, span, .. }
            | Decl::Alias { file, span, .. }
            | Decl::Input { file, span, .. }
            | Decl::Instance { file, span, .. } => (*file, *span),
        }
    }
}

/// What a map node's variable stands for, to check its uses.
enum Over<'a> {
    /// A list literal: each element is checked against every use.
    Exprs(&'a [Expr]),
    /// A list param's elements.
    Values { param: String, values: Vec<Value> },
    /// Elements of a statically known type (a node field, a map node).
    Static(Type),
    /// `over` itself was in error; uses are not checked again.
    Unknown,
}

#[derive(Clone)]
enum AliasError {
    /// The undefined target, and the file of the alias that names it.
    Undefined(FileId, ast::Ident),
    /// The aliases of the cycle, in order, starting where the walk entered
    /// it; shared by every alias on or leading into the cycle.
    Cycle(std::rc::Rc<[String]>),
    TwoFields,
}

/// Where an alias leads: the node (or other declaration) at the end of its
/// chain, and the one field taken on the way, if any.
type AliasTarget = Result<(String, Option<ast::Ident>), AliasError>;

struct MapCtx<'a> {
    var: &'a ast::Ident,
    over: Over<'a>,
}

struct Checker<'a> {
    files: &'a [ParsedFile],
    scopes: &'a [Scope],
    registry: &'a Registry,
    decls: HashMap<String, Decl>,
    /// Every alias's target, computed once by [`Checker::resolve_aliases`]
    /// so that uses and chains do not walk a chain again.
    alias_targets: HashMap<String, AliasTarget>,
    errors: Vec<LangDiag>,
}

/// Checks the parsed files (`order`: files in pipeline order, imports
/// first) and applies `--set` overrides.
pub fn check(
    files: &[ParsedFile],
    scopes: &[Scope],
    order: &[FileId],
    overrides: &[String],
    registry: &Registry,
) -> Result<Pipeline, Vec<LangDiag>> {
    let mut checker = Checker {
        files,
        scopes,
        registry,
        decls: HashMap::new(),
        alias_targets: HashMap::new(),
        errors: Vec::new(),
    };
    checker.declare(order);
    checker.check_bindings();
    checker.check_aliases();
    checker.apply_overrides(overrides);
    let mut nodes = Vec::new();
    for &file in order {
        for stmt in &files[file].ast.stmts {
            if let StmtKind::Node { name, rhs } = &stmt.kind {
                // A duplicate's second definition is reported, not checked;
                // a definition replaced by a binding is not declared.
                match checker.decls.get(&checker.own_name(file, &name.text)) {
                    Some(Decl::Node { file: f, span, .. }) if *f == file && *span == name.span => {}
                    _ => continue,
                }
                if let Some(node) = checker.node(file, name, rhs) {
                    nodes.push(node);
                }
            }
        }
    }
    if checker.errors.is_empty() {
        checker.cycles(&nodes);
    }
    if !checker.errors.is_empty() {
        return Err(checker.errors);
    }
    let mut params = BTreeMap::new();
    for (name, decl) in &checker.decls {
        if let Decl::Param {
            file,
            span,
            value,
            overridden,
        } = decl
        {
            params.insert(
                name.clone(),
                ParamDef {
                    name: name.clone(),
                    value: value.clone(),
                    span: Span {
                        file: *file,
                        span: *span,
                    },
                    overridden: *overridden,
                },
            );
        }
    }
    Ok(Pipeline {
        path: files[0].path.clone(),
        sources: Sources {
            files: files
                .iter()
                .map(|f| ir::SourceFile {
                    path: f.path.clone(),
                    text: f.src.text.to_string(),
                })
                .collect(),
        },
        params,
        nodes,
    })
}

fn span_between(start: usize, end: usize) -> SourceSpan {
    SourceSpan::new(start.into(), end.saturating_sub(start))
}

impl<'a> Checker<'a> {
    fn src(&self, file: FileId) -> &'a DiagSource {
        &self.files[file].src
    }

    fn error(
        &mut self,
        file: FileId,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        let diag = self.src(file).error(span, message, label).help(help);
        self.errors.push(diag);
    }

    fn empty_input_path(&mut self, file: FileId, span: SourceSpan) {
        self.error(
            file,
            span,
            "empty input path",
            "empty",
            "give the path of a file or directory, relative to this .flow file",
        );
    }

    /// The fields of a record expression, each value through `value`
    /// (given the field's name); a field given twice is an error, its
    /// second value left unchecked. `None` when any field failed.
    fn record_fields<T>(
        &mut self,
        file: FileId,
        fields: &[(crate::lang::ast::Ident, Expr)],
        mut value: impl FnMut(&mut Self, &str, &Expr) -> Option<T>,
    ) -> Option<BTreeMap<String, T>> {
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key, expr) in fields {
            if out.contains_key(&key.text) {
                self.error(
                    file,
                    key.span,
                    format!("duplicate field `{}`", key.text),
                    "repeated here",
                    "each field of a record appears once",
                );
                ok = false;
                continue;
            }
            match value(self, &key.text, expr) {
                Some(v) => {
                    out.insert(key.text.clone(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Removes `.` and resolves `..` without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}
