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

    /// Collects every param, node, alias and module instance name (with its
    /// namespace's prefix), reporting duplicates. Definitions that a module
    /// instance's `with {..}` replaces by a reference are not declared; a
    /// param bound to a literal takes that literal as its default.
    fn declare(&mut self, order: &[FileId]) {
        let files = self.files;
        for &file in order {
            for stmt in &files[file].ast.stmts {
                let (name, decl) = match &stmt.kind {
                    StmtKind::Import { instance: None, .. } => continue,
                    StmtKind::Import {
                        instance: Some(instance),
                        ..
                    } => {
                        let Some(scope) = self.instance_scope(file, &instance.name) else {
                            continue; // the file could not be read: reported
                        };
                        let decl = Decl::Instance {
                            file,
                            span: instance.name.span,
                            scope,
                        };
                        (&instance.name, decl)
                    }
                    StmtKind::Param { name, value } => {
                        let value = match self.binding(self.files[file].scope, &name.text) {
                            Some((bfile, bound)) if !matches!(bound.kind, ExprKind::Ref { .. }) => {
                                self.literal(bfile, bound)
                            }
                            Some(_) => continue, // replaced by a reference
                            None => self.literal(file, value),
                        };
                        let Some(value) = value else {
                            continue;
                        };
                        (
                            name,
                            Decl::Param {
                                file,
                                span: name.span,
                                value,
                                overridden: false,
                            },
                        )
                    }
                    StmtKind::Node { name, .. }
                        if self.binding(self.files[file].scope, &name.text).is_some() =>
                    {
                        continue; // replaced by a binding (checked in check_bindings)
                    }
                    StmtKind::Node {
                        name,
                        rhs: Rhs::Input(input),
                    } => {
                        let ExprKind::Input { dir, path } = &input.kind else {
                            continue;
                        };
                        if path.value.is_empty() {
                            self.error(
                                file,
                                path.span,
                                "empty input path",
                                "empty",
                                "give the path of a file or directory, relative to this .flow file",
                            );
                            continue;
                        }
                        let decl = Decl::Input {
                            file,
                            span: name.span,
                            dir: *dir,
                            path: path.clone(),
                        };
                        (name, decl)
                    }
                    StmtKind::Node {
                        name,
                        rhs: Rhs::Alias(target),
                    } => {
                        let ExprKind::Ref { name: to, fields } = &target.kind else {
                            continue;
                        };
                        let decl = Decl::Alias {
                            file,
                            span: name.span,
                            target: to.clone(),
                            fields: fields.clone(),
                        };
                        (name, decl)
                    }
                    StmtKind::Node { name, rhs } => {
                        let (call, is_map) = match rhs {
                            Rhs::Call(call) => (call, false),
                            Rhs::Map { call, .. } => (call, true),
                            Rhs::Alias(_) | Rhs::Input(_) => continue,
                        };
                        let spec = self.registry.get(&call.op.text).map(|op| op.spec());
                        if spec.is_none() {
                            let help = suggest(&call.op.text, self.registry.names(), || {
                                let names: Vec<&str> = self.registry.names().collect();
                                if names.is_empty() {
                                    "no ops are registered".to_string()
                                } else {
                                    format!("known ops: {}", names.join(", "))
                                }
                            });
                            self.error(
                                file,
                                call.op.span,
                                format!("unknown op `{}`", call.op.text),
                                "no such op",
                                help,
                            );
                        }
                        (
                            name,
                            Decl::Node {
                                file,
                                span: name.span,
                                spec,
                                is_map,
                            },
                        )
                    }
                };
                if name.text == "out" {
                    self.error(
                        file,
                        name.span,
                        "`out` is a reserved name",
                        "reserved",
                        "`{out}` in a template means the node's output directory; choose another name",
                    );
                    continue;
                }
                let full = self.own_name(file, &name.text);
                if let Some(first) = self.decls.get(&full) {
                    let (first_file, first_span) = first.place();
                    let mut diag = self
                        .src(file)
                        .error(name.span, format!("duplicate name `{}`", name.text), "defined again here")
                        .help("params, nodes and module instances share one namespace across the files a file imports; rename one of them");
                    if first_file == file {
                        diag = diag.label(first_span, "first defined here");
                    } else {
                        diag = diag.related(self.src(first_file).error(
                            first_span,
                            format!(
                                "`{}` is first defined in {}",
                                name.text,
                                self.src(first_file).name
                            ),
                            "first defined here",
                        ));
                    }
                    self.errors.push(diag);
                    continue;
                }
                self.decls.insert(full, decl);
            }
        }
    }

    /// Every declared name, as "did you mean" candidates; none once many
    /// errors are found. Each suggestion compares a name with every
    /// declaration, so suggesting for thousands of errors is quadratic, and
    /// only the first reports are shown (see [`MAX_SHOWN`]).
    fn declared_names_to_suggest(&self) -> Vec<&str> {
        if self.errors.len() >= 2 * MAX_SHOWN {
            return Vec::new();
        }
        self.decls.keys().map(String::as_str).collect()
    }

    /// The full name of `name` declared in `file`.
    fn own_name(&self, file: FileId, name: &str) -> String {
        qualify(&self.scopes[self.files[file].scope].prefix, name)
    }

    /// The scope made by the `import .. as NAME` in `file`.
    fn instance_scope(&self, file: FileId, name: &ast::Ident) -> Option<ScopeId> {
        self.scopes.iter().position(|s| {
            s.origin
                .as_ref()
                .is_some_and(|o| o.file == file && o.instance.name.span == name.span)
        })
    }

    /// What the instance `scope` binds `name` to: the importing file and
    /// the binding's value.
    fn binding(&self, scope: ScopeId, name: &str) -> Option<(FileId, &'a Expr)> {
        let scopes: &'a [Scope] = self.scopes;
        let origin = scopes[scope].origin.as_ref()?;
        origin
            .instance
            .bindings()
            .iter()
            .find(|(key, _)| key.text == name)
            .map(|(_, value)| (origin.file, value))
    }

    /// Resolves a reference `name.fields...` written in `file` to the full
    /// name of what it names and the fields left over. Inside a module
    /// instance a name is, in this order: what the instance binds it to, the
    /// module's own definition, or the same name in the importing namespace.
    /// `small.cpt` names `cpt` of the instance `small`. An undefined name
    /// comes back qualified as far as it resolved, for the error message.
    fn resolve(
        &self,
        file: FileId,
        name: &ast::Ident,
        fields: &[ast::Ident],
    ) -> (String, Vec<ast::Ident>) {
        self.resolve_in(self.files[file].scope, name, fields, true)
    }

    fn resolve_in(
        &self,
        scope: ScopeId,
        name: &ast::Ident,
        fields: &[ast::Ident],
        look_outside: bool,
    ) -> (String, Vec<ast::Ident>) {
        if let Some((bfile, value)) = self.binding(scope, &name.text) {
            if let ExprKind::Ref {
                name: to,
                fields: to_fields,
            } = &value.kind
            {
                let (full, mut rest) = self.resolve(bfile, to, to_fields);
                rest.extend(fields.iter().cloned());
                return (full, rest);
            }
        }
        let full = qualify(&self.scopes[scope].prefix, &name.text);
        match self.decls.get(&full) {
            Some(Decl::Instance { scope: inner, .. }) if !fields.is_empty() => {
                return self.resolve_in(*inner, &fields[0], &fields[1..], false);
            }
            Some(_) => return (full, fields.to_vec()),
            None => {}
        }
        match self.scopes[scope].parent {
            Some(parent) if look_outside => self.resolve_in(parent, name, fields, true),
            _ => (full, fields.to_vec()),
        }
    }

    /// Checks every module instance's `with {..}`: each key names a param,
    /// node or alias the module defines (a node or alias only by a
    /// reference), or a name the module uses without defining it.
    fn check_bindings(&mut self) {
        let scopes = self.scopes;
        let files = self.files;
        for (id, scope) in scopes.iter().enumerate() {
            let Some(origin) = &scope.origin else {
                continue;
            };
            let module: Vec<&ParsedFile> = files.iter().filter(|f| f.scope == id).collect();
            let Some(first) = module.first() else {
                continue;
            };
            let module_name = first.src.name.clone();
            let mut params = Vec::new();
            let mut nodes = Vec::new();
            let mut instances = Vec::new();
            let mut used = std::collections::BTreeSet::new();
            for f in &module {
                for stmt in &f.ast.stmts {
                    match &stmt.kind {
                        StmtKind::Param { name, .. } => params.push(name.text.clone()),
                        StmtKind::Node { name, rhs } => {
                            nodes.push(name.text.clone());
                            names_used_rhs(rhs, &mut used);
                        }
                        StmtKind::Import {
                            instance: Some(inst),
                            ..
                        } => {
                            instances.push(inst.name.text.clone());
                            for (_, value) in inst.bindings() {
                                names_used(value, &mut used);
                            }
                        }
                        StmtKind::Import { .. } => {}
                    }
                }
            }
            let mut seen: HashMap<&str, SourceSpan> = HashMap::new();
            for (key, value) in origin.instance.bindings() {
                if let Some(first) = seen.insert(&key.text, key.span) {
                    let diag = self
                        .src(origin.file)
                        .error(
                            key.span,
                            format!("`{}` is bound twice", key.text),
                            "bound again here",
                        )
                        .label(first, "first bound here")
                        .help("bind each name once");
                    self.errors.push(diag);
                    continue;
                }
                let is_ref = matches!(value.kind, ExprKind::Ref { .. });
                let problem = if params.contains(&key.text) {
                    None
                } else if instances.contains(&key.text) {
                    Some((
                        format!("`{}` is a module instance of {module_name}; it cannot be bound", key.text),
                        "bind the names that instance uses instead, in its own `import .. with {..}`".to_string(),
                    ))
                } else if nodes.contains(&key.text) {
                    (!is_ref).then(|| {
                        (
                            format!(
                                "`{}` is a node of {module_name}; bind it to a node, not a value",
                                key.text
                            ),
                            "write the name of a node (or `dir(..)` through a node) of this file"
                                .to_string(),
                        )
                    })
                } else if used.contains(&key.text) {
                    (!is_ref).then(|| {
                        (
                            format!("{module_name} uses `{}` but does not declare it as a param; bind it to a name", key.text),
                            format!("a value binds only a param of the module; here write a param or node of this file, or declare `param {}` in the module", key.text),
                        )
                    })
                } else {
                    let mut names: Vec<&str> =
                        params.iter().chain(&nodes).map(String::as_str).collect();
                    names.extend(used.iter().map(String::as_str));
                    let help = suggest(&key.text, names.iter().copied(), || {
                        format!("bind a param or node of {module_name}, or a name it uses")
                    });
                    Some((
                        format!("{module_name} neither defines nor uses `{}`", key.text),
                        help,
                    ))
                };
                if let Some((message, help)) = problem {
                    self.error(origin.file, key.span, message, "bound here", help);
                }
            }
        }
    }

    /// The target of the alias `name` (see [`Self::resolve_aliases`]).
    fn alias_target(&self, name: &str) -> AliasTarget {
        self.alias_targets
            .get(name)
            .cloned()
            .unwrap_or_else(|| Ok((name.to_string(), None)))
    }

    /// Follows every alias chain to the node it stands for (and a field),
    /// once: each alias is stepped over a single time and its result
    /// remembered, so checking is linear in the number of aliases however
    /// long the chains are (walking each chain from each alias, as before,
    /// took minutes for 8,000 aliases). Iterative, so a long chain cannot
    /// overflow the stack. `names` are visited in order, which decides where
    /// a cycle is said to start.
    fn resolve_aliases(&mut self, names: &[String]) {
        let mut targets: HashMap<String, AliasTarget> = HashMap::new();
        for name in names {
            // The chain walked from `name` until a known result: each alias
            // with the field its own step takes.
            let mut path: Vec<(String, Option<ast::Ident>)> = Vec::new();
            let mut on_path: HashMap<String, usize> = HashMap::new();
            let mut current = name.clone();
            let end: AliasTarget = loop {
                if let Some(known) = targets.get(&current) {
                    break known.clone();
                }
                if let Some(&start) = on_path.get(&current) {
                    let cycle: std::rc::Rc<[String]> =
                        path[start..].iter().map(|(n, _)| n.clone()).collect();
                    let err = Err(AliasError::Cycle(cycle));
                    // Every alias on the cycle has that result, fields or not.
                    for (n, _) in path.drain(start..) {
                        targets.insert(n, err.clone());
                    }
                    break err;
                }
                let Some(Decl::Alias {
                    file,
                    target,
                    fields,
                    ..
                }) = self.decls.get(&current)
                else {
                    break Ok((current, None));
                };
                let (full, rest) = self.resolve(*file, target, fields);
                if rest.len() > 1 {
                    targets.insert(current, Err(AliasError::TwoFields));
                    break Err(AliasError::TwoFields);
                }
                if !self.decls.contains_key(&full) {
                    let shown = ast::Ident {
                        text: full,
                        span: target.span,
                    };
                    let err = Err(AliasError::Undefined(*file, shown));
                    targets.insert(current, err.clone());
                    break err;
                }
                on_path.insert(current.clone(), path.len());
                path.push((current, rest.into_iter().next()));
                current = full;
            };
            // Back along the chain: each alias's result is its own field
            // added to the result of the alias it names.
            let mut result = end;
            for (alias, field) in path.into_iter().rev() {
                result = match result {
                    Ok((target, None)) => Ok((target, field)),
                    Ok((_, Some(_))) if field.is_some() => Err(AliasError::TwoFields),
                    other => other,
                };
                targets.insert(alias, result.clone());
            }
        }
        self.alias_targets = targets;
    }

    /// Reports aliases that lead nowhere, in circles, or to a param.
    fn check_aliases(&mut self) {
        let mut aliases: Vec<(String, FileId, SourceSpan)> = self
            .decls
            .iter()
            .filter_map(|(n, d)| match d {
                Decl::Alias { file, target, .. } => Some((n.clone(), *file, target.span)),
                _ => None,
            })
            .collect();
        aliases.sort_by_key(|(_, f, s)| (*f, s.offset()));
        let names: Vec<String> = aliases.iter().map(|(n, _, _)| n.clone()).collect();
        self.resolve_aliases(&names);
        for (name, file, span) in aliases {
            match self.alias_target(&name) {
                Ok((target, field)) => {
                    if let Some(Decl::Param { .. }) = self.decls.get(&target) {
                        self.error(
                            file,
                            span,
                            format!("`{name}` is an alias of the param `{target}`"),
                            "a param",
                            "an alias (`name = other`) names a node; to share a value use `param`",
                        );
                    } else if let Some(Decl::Instance { .. }) = self.decls.get(&target) {
                        self.error(
                            file,
                            span,
                            format!("`{name}` is an alias of the module instance `{target}`"),
                            "a module instance",
                            format!("an alias names a node; name one of the instance's nodes: `{target}.NAME`"),
                        );
                    } else if let Some(f) = field {
                        // Check the field exists once, here, not at every use.
                        if let Some(Decl::Node {
                            spec: Some(spec), ..
                        }) = self.decls.get(&target)
                        {
                            if !spec.outputs.iter().any(|o| o.name == f.text) {
                                let help =
                                    suggest(&f.text, spec.outputs.iter().map(|o| o.name), || {
                                        format!("op `{}` declares no such output", spec.name)
                                    });
                                self.error(
                                    file,
                                    f.span,
                                    format!(
                                        "`{target}` (op `{}`) has no output `{}`",
                                        spec.name, f.text
                                    ),
                                    "no such output",
                                    help,
                                );
                            }
                        }
                    }
                }
                Err(AliasError::Undefined(target_file, target)) => {
                    // Reported once, at the alias that names the undefined target.
                    if target_file == file && target.span == span {
                        let names = self.declared_names_to_suggest();
                        let help = suggest(&target.text, names.iter().copied(), || {
                            "an alias names a node defined elsewhere in the pipeline".to_string()
                        });
                        self.error(
                            file,
                            span,
                            format!("undefined name `{}`", target.text),
                            "not defined",
                            help,
                        );
                    }
                }
                Err(AliasError::Cycle(cycle)) => {
                    // Reported once, at the alias where the cycle was entered;
                    // aliases leading into it are fixed with it.
                    if cycle.first() == Some(&name) {
                        self.error(
                            file,
                            span,
                            format!("alias cycle: {} -> {name}", cycle.join(" -> ")),
                            "refers back to itself",
                            "an alias must lead to a node",
                        );
                    }
                }
                Err(AliasError::TwoFields) => {
                    self.error(
                        file,
                        span,
                        "only one level of field access is supported",
                        "this alias leads to a field of a field",
                        "alias the node, or one field of it",
                    );
                }
            }
        }
    }

    /// Evaluates a literal expression (a param's value).
    fn literal(&mut self, file: FileId, expr: &Expr) -> Option<Value> {
        match &expr.kind {
            ExprKind::Str(s) => Some(Value::Str(s.value.clone())),
            ExprKind::Int(i, _) => Some(Value::Int(*i)),
            ExprKind::Float(f, _) => Some(Value::Float(*f)),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::List(items) => {
                let values: Vec<Option<Value>> =
                    items.iter().map(|e| self.literal(file, e)).collect();
                values
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Value::List)
            }
            ExprKind::Record(fields) => {
                let mut map = BTreeMap::new();
                let mut ok = true;
                for (key, value) in fields {
                    if map.contains_key(&key.text) {
                        self.error(
                            file,
                            key.span,
                            format!("duplicate field `{}`", key.text),
                            "repeated here",
                            "each field of a record appears once",
                        );
                        ok = false;
                    }
                    match self.literal(file, value) {
                        Some(v) => {
                            map.insert(key.text.clone(), v);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Record(map))
            }
            ExprKind::Ref { name, .. } => {
                self.error(
                    file,
                    expr.span,
                    format!("a param's value must be a literal, not a reference to `{}`", name.text),
                    "a reference",
                    "params hold constants (strings, numbers, booleans, lists, records); use the reference directly in a call",
                );
                None
            }
            ExprKind::Input { dir, .. } => {
                let kind = if *dir { "dir" } else { "file" };
                self.error(
                    file,
                    expr.span,
                    format!("a param's value must be a literal, not `{kind}(...)`"),
                    "an input",
                    format!("write `{kind}(\"...\")` directly in the call that reads it"),
                );
                None
            }
        }
    }

    fn apply_overrides(&mut self, overrides: &[String]) {
        for raw in overrides {
            let src = DiagSource::new("--set", raw.clone());
            let Some(eq) = raw.find('=') else {
                self.errors.push(
                    src.error(
                        span_between(0, raw.len()),
                        format!("bad `--set {raw}`: expected NAME=VALUE"),
                        "no `=`",
                    )
                    .help("write `--set NAME=VALUE`, e.g. `--set lr=1e-5`"),
                );
                continue;
            };
            let name = raw[..eq].trim();
            let name_span = span_between(0, eq);
            let value_text = &raw[eq + 1..];
            let value_src = DiagSource::new("--set", raw.clone());
            let Some(Decl::Param { value: default, .. }) = self.decls.get(name) else {
                let is_node = matches!(self.decls.get(name), Some(Decl::Node { .. }));
                let is_instance = matches!(self.decls.get(name), Some(Decl::Instance { .. }));
                let params: Vec<&str> = self
                    .decls
                    .iter()
                    .filter(|(_, d)| matches!(d, Decl::Param { .. }))
                    .map(|(n, _)| n.as_str())
                    .collect();
                let help = if is_node {
                    format!("`{name}` is a node; only params can be set")
                } else if is_instance {
                    format!("`{name}` is a module instance; set one of its params: `--set {name}.NAME=VALUE`")
                } else {
                    suggest(name, params.iter().copied(), || {
                        let mut params = params.clone();
                        params.sort();
                        if params.is_empty() {
                            "the pipeline declares no params".to_string()
                        } else {
                            format!("the pipeline's params: {}", params.join(", "))
                        }
                    })
                };
                self.errors.push(
                    src.error(
                        name_span,
                        format!("`--set`: unknown param `{name}`"),
                        "no such param",
                    )
                    .help(help),
                );
                continue;
            };
            let default = default.clone();
            // Parse the value on its own so that spans line up, then shift them.
            let literal_src = DiagSource::new("--set", value_text.to_string());
            let parsed = match parse::parse_literal(&literal_src) {
                Ok(p) => p,
                Err(_) => {
                    self.errors.push(
                        value_src
                            .error(span_between(eq + 1, raw.len()), format!("`--set {name}`: `{value_text}` is not a valid value"), "does not parse")
                            .help("values are written as in a .flow file: 3, 2e-5, true, \"text\", [1, 2], {k: v}; a bare word is a string"),
                    );
                    continue;
                }
            };
            let new_value = match parsed {
                None => Some(Value::Str(value_text.to_string())),
                Some(expr) => {
                    let before = self.errors.len();
                    // Literal evaluation errors carry spans into the value text.
                    let v = self.literal_standalone(&expr);
                    self.errors.truncate(before);
                    v
                }
            };
            let Some(new_value) = new_value else {
                self.errors.push(
                    value_src
                        .error(
                            span_between(eq + 1, raw.len()),
                            format!("`--set {name}`: `{value_text}` is not a literal"),
                            "not a literal",
                        )
                        .help("values are constants: 3, 2e-5, true, \"text\", [1, 2], {k: v}"),
                );
                continue;
            };
            match conform_to_default(&default, &new_value) {
                Some(v) => {
                    if let Some(Decl::Param {
                        value, overridden, ..
                    }) = self.decls.get_mut(name)
                    {
                        *value = v;
                        *overridden = true;
                    }
                }
                None => self.errors.push(
                    value_src
                        .error(
                            span_between(eq + 1, raw.len()),
                            format!(
                                "`--set {name}`: expected {} like the default, got {}",
                                value_name(&default),
                                value_name(&new_value)
                            ),
                            format!("{} value", value_name(&new_value)),
                        )
                        .help(format!(
                            "the default of `{name}` is {}; give a value of the same kind",
                            show_value(&default)
                        )),
                ),
            }
        }
    }

    fn literal_standalone(&mut self, expr: &Expr) -> Option<Value> {
        match &expr.kind {
            ExprKind::Str(s) => Some(Value::Str(s.value.clone())),
            ExprKind::Int(i, _) => Some(Value::Int(*i)),
            ExprKind::Float(f, _) => Some(Value::Float(*f)),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::List(items) => items
                .iter()
                .map(|e| self.literal_standalone(e))
                .collect::<Option<Vec<_>>>()
                .map(Value::List),
            ExprKind::Record(fields) => {
                let mut map = BTreeMap::new();
                for (k, v) in fields {
                    map.insert(k.text.clone(), self.literal_standalone(v)?);
                }
                Some(Value::Record(map))
            }
            ExprKind::Ref { .. } | ExprKind::Input { .. } => None,
        }
    }

    fn node(&mut self, file: FileId, name: &ast::Ident, rhs: &'a Rhs) -> Option<ir::Node> {
        let (call, map) = match rhs {
            Rhs::Call(call) => (call, None),
            Rhs::Map {
                call, var, over, ..
            } => (call, Some((var, over))),
            Rhs::Alias(_) | Rhs::Input(_) => return None,
        };
        let full_name = self.own_name(file, &name.text);
        let spec = match self.decls.get(&full_name) {
            Some(Decl::Node {
                spec: Some(spec), ..
            }) => spec.clone(),
            _ => return None, // unknown op: already reported
        };
        let (map_ctx, map_over) = match map {
            None => (None, None),
            Some((var, over)) => {
                // Only the file's own namespace: a module cannot know the
                // names of the files that import it.
                if self.decls.contains_key(&self.own_name(file, &var.text)) || var.text == "out" {
                    self.error(
                        file,
                        var.span,
                        format!(
                            "the loop variable `{}` hides a name of the pipeline",
                            var.text
                        ),
                        "hides another name",
                        "choose a loop variable name that no param or node uses",
                    );
                }
                let (over_arg, shape) = self.over(file, over);
                (
                    Some(MapCtx { var, over: shape }),
                    over_arg.map(|a| MapOver {
                        var: var.text.clone(),
                        over: a,
                    }),
                )
            }
        };
        let (args, device, resources) = self.call(file, call, &spec, map_ctx.as_ref())?;
        if map.is_some() && map_over.is_none() {
            return None;
        }
        Some(ir::Node {
            name: full_name,
            span: Span {
                file,
                span: name.span,
            },
            op: spec.name.to_string(),
            args,
            map: map_over,
            device,
            resources,
        })
    }

    /// Checks a map's list; returns its argument and what its elements are.
    fn over(&mut self, file: FileId, over: &'a Expr) -> (Option<Arg>, Over<'a>) {
        let list_any = Type::List(Box::new(Type::Any));
        let before = self.errors.len();
        let arg = self.expr(file, over, &list_any, None, "OVER");
        if self.errors.len() > before || arg.is_none() {
            for diag in &mut self.errors[before..] {
                if let Some(rest) = diag
                    .message
                    .strip_prefix("mistyped OVER: expected a list of values, got ")
                {
                    diag.message = format!("a map runs over a list, not {rest}");
                    diag.help = Some(
                        "map over a list literal `[...]`, a list param, a node output of list type (`node.field`) or another map node"
                            .into(),
                    );
                }
                diag.message = diag.message.replace("OVER", "the list of a map");
            }
            return (None, Over::Unknown);
        }
        let shape = match &over.kind {
            ExprKind::List(items) => Over::Exprs(items),
            ExprKind::Ref { name, fields } => {
                let (full, fields) = self.resolve(file, name, fields);
                match self.decls.get(&full) {
                    Some(Decl::Param {
                        value: Value::List(values),
                        ..
                    }) => Over::Values {
                        param: full.clone(),
                        values: values.clone(),
                    },
                    Some(Decl::Node {
                        spec: Some(spec),
                        is_map,
                        ..
                    }) => match fields.first() {
                        None if *is_map => Over::Static(spec.produces.clone()),
                        Some(field) => match spec
                            .outputs
                            .iter()
                            .find(|o| o.name == field.text)
                            .map(|o| &o.ty)
                        {
                            Some(ty) if *is_map => Over::Static(ty.clone()),
                            Some(Type::List(inner)) => Over::Static((**inner).clone()),
                            _ => Over::Static(Type::Any),
                        },
                        None => Over::Static(Type::Any),
                    },
                    _ => Over::Unknown,
                }
            }
            _ => Over::Unknown,
        };
        (arg, shape)
    }

    /// Checks a call's arguments against the op; fills defaults.
    fn call(
        &mut self,
        file: FileId,
        call: &ast::Call,
        spec: &OpSpec,
        map: Option<&MapCtx>,
    ) -> Option<(BTreeMap<String, Arg>, Option<DeviceRequest>, NodeResources)> {
        let before = self.errors.len();
        let mut args = BTreeMap::new();
        let mut device = None;
        let mut resources = NodeResources::default();
        let mut seen: HashMap<&str, SourceSpan> = HashMap::new();
        for arg in &call.args {
            if let Some(first) = seen.get(arg.name.text.as_str()) {
                let diag = self
                    .src(file)
                    .error(
                        arg.name.span,
                        format!("argument `{}` is given twice", arg.name.text),
                        "given again here",
                    )
                    .label(*first, "first given here")
                    .help("give each argument once");
                self.errors.push(diag);
                continue;
            }
            seen.insert(&arg.name.text, arg.name.span);
            if arg.name.text == DEVICE_ARG {
                device = self.device(file, &arg.value);
                continue;
            }
            if arg.name.text == RESOURCES_ARG {
                resources = self.resources(file, &arg.value);
                continue;
            }
            let Some(param) = spec.params.iter().find(|p| p.name == arg.name.text) else {
                let help = suggest(&arg.name.text, spec.params.iter().map(|p| p.name), || {
                    let names: Vec<&str> = spec.params.iter().map(|p| p.name).collect();
                    if names.is_empty() {
                        format!(
                            "`{}` takes no arguments (besides `device` and `resources`)",
                            spec.name
                        )
                    } else {
                        format!("`{}` takes: {}", spec.name, names.join(", "))
                    }
                });
                self.error(
                    file,
                    arg.name.span,
                    format!(
                        "unknown argument `{}` for op `{}`",
                        arg.name.text, spec.name
                    ),
                    "not an argument of this op",
                    help,
                );
                continue;
            };
            let what = format!("argument `{}` of `{}`", param.name, spec.name);
            if let Some(a) = self.expr(file, &arg.value, &param.ty, map, &what) {
                self.check_range(file, &arg.value, &a, param, spec, map);
                args.insert(param.name.to_string(), a);
            }
        }
        for param in &spec.params {
            if seen.contains_key(param.name) {
                continue;
            }
            match &param.default {
                Some(default) => {
                    let arg = match (&param.ty, default) {
                        (Type::Template, Value::Str(s)) => Arg::Template(default_template(s)),
                        _ => Arg::Lit(default.clone()),
                    };
                    args.insert(param.name.to_string(), arg);
                }
                None => {
                    let doc = if param.doc.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", param.doc)
                    };
                    self.error(
                        file,
                        call.op.span,
                        format!(
                            "missing required argument `{}` of op `{}`",
                            param.name, spec.name
                        ),
                        format!("needs `{}`", param.name),
                        format!("add `{}: ...`, {}{doc}", param.name, type_name(&param.ty)),
                    );
                }
            }
        }
        (self.errors.len() == before).then_some((args, device, resources))
    }

    /// A literal or a param's value, for the reserved arguments.
    fn reserved_value(&mut self, file: FileId, expr: &Expr) -> Option<Value> {
        match &expr.kind {
            ExprKind::Str(s) => Some(Value::Str(s.value.clone())),
            ExprKind::Int(n, _) => Some(Value::Int(*n)),
            ExprKind::Ref { name, fields } => {
                let (full, rest) = self.resolve(file, name, fields);
                match self.decls.get(&full) {
                    Some(Decl::Param { value, .. }) if rest.is_empty() => Some(value.clone()),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// `resources: {cpus: 8, mem: "32G", gpus: 1, time: "4:00:00", partition: "gpu", shards: 16}`.
    fn resources(&mut self, file: FileId, expr: &Expr) -> NodeResources {
        const FIELDS: &str = "cpus (int), mem (\"16G\", \"512M\" or MiB as an int), gpus (int), time (\"HH:MM:SS\", \"D-HH:MM:SS\" or minutes as an int), partition (string), shards (int)";
        let mut r = NodeResources::default();
        let ExprKind::Record(fields) = &expr.kind else {
            self.error(
                file,
                expr.span,
                "`resources` must be a record",
                "not a record",
                format!("write e.g. `resources: {{cpus: 8, mem: \"32G\"}}`; fields: {FIELDS}"),
            );
            return r;
        };
        for (name, value) in fields {
            let v = self.reserved_value(file, value);
            let ok = match (name.text.as_str(), &v) {
                ("cpus", Some(Value::Int(n))) if *n >= 1 => {
                    r.cpus = Some(*n as usize);
                    true
                }
                ("gpus", Some(Value::Int(n))) if *n >= 0 => {
                    r.gpus = Some(*n as u32);
                    true
                }
                ("mem", Some(Value::Int(n))) if *n >= 1 => {
                    r.mem_mb = Some(*n as u64);
                    true
                }
                ("mem", Some(Value::Str(s))) => match parse_mem_mb(s) {
                    Some(m) => {
                        r.mem_mb = Some(m);
                        true
                    }
                    None => false,
                },
                ("time", Some(Value::Int(n))) if *n >= 1 => {
                    r.time_min = Some(*n as u64);
                    true
                }
                ("time", Some(Value::Str(s))) => match parse_time_min(s) {
                    Some(m) => {
                        r.time_min = Some(m);
                        true
                    }
                    None => false,
                },
                ("partition", Some(Value::Str(s))) if !s.trim().is_empty() => {
                    r.partition = Some(s.clone());
                    true
                }
                ("shards", Some(Value::Int(n))) if *n >= 1 => {
                    r.shards = Some(*n as usize);
                    true
                }
                ("cpus" | "gpus" | "mem" | "time" | "partition" | "shards", _) => false,
                (other, _) => {
                    self.error(
                        file,
                        name.span,
                        format!("unknown resource `{other}`"),
                        "not a resource",
                        format!("`resources` takes: {FIELDS}"),
                    );
                    continue;
                }
            };
            if !ok {
                self.error(
                    file,
                    value.span,
                    format!("bad value for resource `{}`", name.text),
                    "not a valid value",
                    format!("`resources` takes: {FIELDS}"),
                );
            }
        }
        r
    }

    /// Numbers outside a param's declared range are errors here, before
    /// anything runs (`t: 1e308` once wrote an all-NaN model).
    fn check_range(
        &mut self,
        file: FileId,
        expr: &Expr,
        arg: &Arg,
        param: &Param,
        spec: &OpSpec,
        map: Option<&MapCtx>,
    ) {
        let Some((lo, hi)) = param.range else { return };
        let bad = match arg {
            Arg::Lit(v) | Arg::Param { value: v, .. } => param.out_of_range(v),
            // A map element is checked through each of the values it takes.
            Arg::MapVar => map.and_then(|m| match &m.over {
                Over::Values { values, .. } => values.iter().find_map(|v| param.out_of_range(v)),
                Over::Exprs(items) => items.iter().find_map(|e| match e.kind {
                    ExprKind::Int(i, _) => param.out_of_range(&Value::Int(i)),
                    ExprKind::Float(f, _) => param.out_of_range(&Value::Float(f)),
                    _ => None,
                }),
                Over::Static(_) | Over::Unknown => None,
            }),
            _ => None,
        };
        if let Some(x) = bad {
            let shown = if x.is_nan() {
                "NaN".to_string()
            } else if x.fract() == 0.0 && x.abs() < 1e16 {
                format!("{x}")
            } else {
                format!("{x:?}") // 1e308 rather than 309 digits
            };
            let from = match arg {
                Arg::Param { name, .. } => format!(" (from param `{name}`)"),
                _ => String::new(),
            };
            self.error(
                file,
                expr.span,
                format!(
                    "argument `{}` of `{}` is {shown}{from}, outside [{lo}, {hi}]",
                    param.name, spec.name
                ),
                "out of range",
                format!(
                    "`{}` takes numbers from {lo} to {hi}: {}",
                    param.name, param.doc
                ),
            );
        }
    }

    fn device(&mut self, file: FileId, expr: &Expr) -> Option<DeviceRequest> {
        let text = match &expr.kind {
            ExprKind::Str(s) => Some(s.value.clone()),
            ExprKind::Ref { name, fields } => {
                let (full, rest) = self.resolve(file, name, fields);
                match self.decls.get(&full) {
                    Some(Decl::Param {
                        value: Value::Str(s),
                        ..
                    }) if rest.is_empty() => Some(s.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        let request = text
            .as_deref()
            .and_then(|t| crate::device::parse_device(t).ok());
        if request.is_none() {
            let got = match &text {
                Some(t) => format!("\"{t}\""),
                None => "this".to_string(),
            };
            self.error(
                file,
                expr.span,
                format!("bad device {got}"),
                "not a device",
                "`device` is one of \"auto\", \"cpu\", \"cuda\" or \"cuda:N\" (N the GPU index)",
            );
        }
        request
    }

    /// Checks an expression against a declared type and resolves it.
    fn expr(
        &mut self,
        file: FileId,
        expr: &Expr,
        ty: &Type,
        map: Option<&MapCtx>,
        what: &str,
    ) -> Option<Arg> {
        if let Type::Either(a, b) = ty {
            // Try each side quietly; report once if neither fits.
            let saved = std::mem::take(&mut self.errors);
            let first = self.expr(file, expr, a, map, what);
            let first_errors = std::mem::take(&mut self.errors);
            let result = if first.is_some() && first_errors.is_empty() {
                first
            } else {
                let second = self.expr(file, expr, b, map, what);
                let second_errors = std::mem::take(&mut self.errors);
                if second.is_some() && second_errors.is_empty() {
                    second
                } else {
                    self.errors = saved;
                    // An error inside the value (a bad name, a bad element)
                    // says more than "expected X or Y": report the errors of
                    // the side that got past the value's outer shape.
                    let inner = |errs: &[LangDiag]| {
                        !errs.is_empty()
                            && errs.iter().all(|d| {
                                d.labels.first().is_some_and(|l| l.inner() != &expr.span)
                                    || !d.message.starts_with("mistyped")
                            })
                    };
                    if inner(&second_errors) {
                        self.errors.extend(second_errors);
                    } else if inner(&first_errors) {
                        self.errors.extend(first_errors);
                    } else {
                        self.mistyped::<()>(file, expr, ty, what);
                    }
                    return None;
                }
            };
            self.errors.splice(0..0, saved);
            return result;
        }
        match &expr.kind {
            ExprKind::Str(lit) => match ty {
                Type::Template => self.template(file, lit, map).map(Arg::Template),
                Type::Str | Type::Any => Some(Arg::Lit(Value::Str(lit.value.clone()))),
                Type::Enum(options) if options.contains(&lit.value) => {
                    Some(Arg::Lit(Value::Str(lit.value.clone())))
                }
                _ => self.mistyped(file, expr, ty, what),
            },
            ExprKind::Int(i, _) => match ty {
                Type::Int | Type::Any => Some(Arg::Lit(Value::Int(*i))),
                Type::Float => Some(Arg::Lit(Value::Float(*i as f64))),
                _ => self.mistyped(file, expr, ty, what),
            },
            ExprKind::Float(f, _) => match ty {
                Type::Float | Type::Any => Some(Arg::Lit(Value::Float(*f))),
                _ => self.mistyped(file, expr, ty, what),
            },
            ExprKind::Bool(b) => match ty {
                Type::Bool | Type::Any => Some(Arg::Lit(Value::Bool(*b))),
                _ => self.mistyped(file, expr, ty, what),
            },
            ExprKind::List(items) => {
                let inner = match ty {
                    Type::List(inner) => (**inner).clone(),
                    Type::Any => Type::Any,
                    _ => return self.mistyped(file, expr, ty, what),
                };
                let what = format!("an element of {what}");
                let args: Vec<Option<Arg>> = items
                    .iter()
                    .map(|e| self.expr(file, e, &inner, map, &what))
                    .collect();
                args.into_iter().collect::<Option<Vec<_>>>().map(fold_list)
            }
            ExprKind::Record(fields) => {
                if !matches!(ty, Type::Record | Type::Any) {
                    return self.mistyped(file, expr, ty, what);
                }
                let mut out = BTreeMap::new();
                let mut ok = true;
                for (key, value) in fields {
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
                    let what = format!("field `{}` of {what}", key.text);
                    match self.expr(file, value, &Type::Any, map, &what) {
                        Some(a) => {
                            out.insert(key.text.clone(), a);
                        }
                        None => ok = false,
                    }
                }
                ok.then(|| fold_record(out))
            }
            ExprKind::Input { dir, path } => {
                let fits = if *dir {
                    accepts_dir(ty)
                } else {
                    accepts_file(ty)
                };
                if !fits {
                    return self.mistyped(file, expr, ty, what);
                }
                if path.value.is_empty() {
                    self.error(
                        file,
                        path.span,
                        "empty input path",
                        "empty",
                        "give the path of a file or directory, relative to this .flow file",
                    );
                    return None;
                }
                let base = self.files[file].path.parent().unwrap_or(Path::new("/"));
                Some(Arg::Input {
                    kind: if *dir {
                        InputKind::Dir
                    } else {
                        InputKind::File
                    },
                    path: normalize(&base.join(&path.value)),
                    span: Span {
                        file,
                        span: expr.span,
                    },
                })
            }
            ExprKind::Ref { name, fields } => {
                self.reference(file, expr, name, fields, ty, map, what)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reference(
        &mut self,
        file: FileId,
        expr: &Expr,
        name: &ast::Ident,
        fields: &[ast::Ident],
        ty: &Type,
        map: Option<&MapCtx>,
        what: &str,
    ) -> Option<Arg> {
        if let Some(ctx) = map.filter(|m| m.var.text == name.text) {
            if let Some(field) = fields.first() {
                self.error(
                    file,
                    field.span,
                    format!(
                        "field access on the loop variable `{}` is not supported",
                        name.text
                    ),
                    "field of a loop variable",
                    "map over the field instead: `for x in node.field`",
                );
                return None;
            }
            return self
                .map_var(file, expr, ctx, ty, what)
                .then_some(Arg::MapVar);
        }
        let (full, fields) = self.resolve(file, name, fields);
        let name = ast::Ident {
            text: full,
            span: name.span,
        };
        if !self.decls.contains_key(&name.text) {
            self.undefined(file, &name, map);
            return None;
        }
        self.resolved_reference(file, expr, &name, &fields, ty, what)
    }

    /// [`Self::reference`] after name resolution: `name` is a declared full
    /// name.
    fn resolved_reference(
        &mut self,
        file: FileId,
        expr: &Expr,
        name: &ast::Ident,
        fields: &[ast::Ident],
        ty: &Type,
        what: &str,
    ) -> Option<Arg> {
        let decl = self.decls.get(&name.text)?;
        match decl {
            Decl::Alias { .. } => {
                // Errors in the alias itself were reported at its definition.
                let (target, field) = self.alias_target(&name.text).ok()?;
                let mut all: Vec<ast::Ident> = Vec::new();
                if let Some(f) = field {
                    all.push(ast::Ident {
                        text: f.text,
                        span: name.span,
                    });
                }
                all.extend(fields.iter().cloned());
                let target = ast::Ident {
                    text: target,
                    span: name.span,
                };
                self.resolved_reference(file, expr, &target, &all, ty, what)
            }
            Decl::Input {
                file: def_file,
                dir,
                path,
                ..
            } => {
                let (dir, def_file) = (*dir, *def_file);
                if let Some(field) = fields.first() {
                    self.error(
                        file,
                        field.span,
                        format!("`{}` is an input; inputs have no fields", name.text),
                        "no fields",
                        "fields (`node.output`) exist only on nodes",
                    );
                    return None;
                }
                let fits = if dir {
                    accepts_dir(ty)
                } else {
                    accepts_file(ty)
                };
                if !fits {
                    let kind = if dir { "a directory" } else { "a file" };
                    self.error(
                        file,
                        expr.span,
                        format!(
                            "mistyped {what}: expected {}, got input `{}` ({kind})",
                            type_name(ty),
                            name.text
                        ),
                        format!("{kind} input"),
                        format!("pass {} here", type_name(ty)),
                    );
                    return None;
                }
                let base = self.files[def_file].path.parent().unwrap_or(Path::new("/"));
                Some(Arg::Input {
                    kind: if dir { InputKind::Dir } else { InputKind::File },
                    path: normalize(&base.join(&path.value)),
                    span: Span {
                        file: def_file,
                        span: path.span,
                    },
                })
            }
            Decl::Instance { .. } => {
                self.error(
                    file,
                    expr.span,
                    format!("`{}` is a module instance, not a node", name.text),
                    "a module instance",
                    format!("name one of its nodes or params: `{}.NAME`", name.text),
                );
                None
            }
            Decl::Param { value, .. } => {
                if let Some(field) = fields.first() {
                    self.error(
                        file,
                        field.span,
                        format!("`{}` is a param; params have no fields", name.text),
                        "no fields",
                        "fields (`node.output`) exist only on nodes",
                    );
                    return None;
                }
                let value = value.clone();
                let param = Arg::Param {
                    name: name.text.clone(),
                    value: value.clone(),
                };
                if *ty == Type::Template {
                    if let Value::Str(_) = value {
                        return Some(Arg::Template(vec![TemplatePart::Arg(param)]));
                    }
                }
                match conform(&value, ty) {
                    Some(v) => Some(Arg::Param {
                        name: name.text.clone(),
                        value: v,
                    }),
                    None => {
                        let help = match ty {
                            Type::File => {
                                "a file input is written `file(\"path\")` in the call".to_string()
                            }
                            Type::Dir | Type::Model => {
                                "a directory input is written `dir(\"path\")` in the call"
                                    .to_string()
                            }
                            _ => {
                                format!("change the param's value, or pass {} here", type_name(ty))
                            }
                        };
                        self.error(
                            file,
                            expr.span,
                            format!(
                                "mistyped {what}: expected {}, got param `{}` ({})",
                                type_name(ty),
                                name.text,
                                value_name(&value)
                            ),
                            format!("{} param", value_name(&value)),
                            help,
                        );
                        None
                    }
                }
            }
            Decl::Node { spec, is_map, .. } => {
                let spec = spec.clone()?;
                let is_map = *is_map;
                if fields.len() > 1 {
                    self.error(
                        file,
                        fields[1].span,
                        "only one level of field access is supported",
                        "second field",
                        "write `node.field`",
                    );
                    return None;
                }
                let (src_ty, field) = match fields.first() {
                    None if is_map => (Type::List(Box::new(spec.produces.clone())), None),
                    None => (spec.produces.clone(), None),
                    Some(field) => {
                        match spec.outputs.iter().find(|o| o.name == field.text) {
                            // A map node's field is the list of its elements' fields.
                            Some(out) if is_map => (
                                Type::List(Box::new(out.ty.clone())),
                                Some(field.text.clone()),
                            ),
                            Some(out) => (out.ty.clone(), Some(field.text.clone())),
                            None => {
                                let help = suggest(
                                    &field.text,
                                    spec.outputs.iter().map(|o| o.name),
                                    || {
                                        let names: Vec<&str> =
                                            spec.outputs.iter().map(|o| o.name).collect();
                                        if names.is_empty() {
                                            format!("op `{}` declares no outputs; pass `{}` itself for its directory", spec.name, name.text)
                                        } else {
                                            format!(
                                                "op `{}` declares: {}",
                                                spec.name,
                                                names.join(", ")
                                            )
                                        }
                                    },
                                );
                                self.error(
                                    file,
                                    field.span,
                                    format!(
                                        "`{}` (op `{}`) has no output `{}`",
                                        name.text, spec.name, field.text
                                    ),
                                    "no such output",
                                    help,
                                );
                                return None;
                            }
                        }
                    }
                };
                if !assignable(&src_ty, ty) {
                    let shown = match &field {
                        Some(f) => format!("`{}.{f}`", name.text),
                        None => format!("node `{}`", name.text),
                    };
                    let help = match ty {
                        Type::Model => "a model is a node whose op produces a model directory, or `dir(\"path\")`".to_string(),
                        Type::File => format!("pass a node output that is a file (`{}.NAME`), or `file(\"path\")`", name.text),
                        _ => format!("pass {} here", type_name(ty)),
                    };
                    self.error(
                        file,
                        expr.span,
                        format!(
                            "mistyped {what}: expected {}, got {shown} ({})",
                            type_name(ty),
                            type_name(&src_ty)
                        ),
                        type_name(&src_ty),
                        help,
                    );
                    return None;
                }
                Some(Arg::Node {
                    node: name.text.clone(),
                    field,
                    span: Span {
                        file,
                        span: expr.span,
                    },
                })
            }
        }
    }

    /// Checks a use of a map variable against the type it is passed as.
    fn map_var(
        &mut self,
        file: FileId,
        use_expr: &Expr,
        ctx: &MapCtx,
        ty: &Type,
        what: &str,
    ) -> bool {
        match &ctx.over {
            Over::Unknown => true,
            Over::Exprs(items) => {
                // Check every element quietly; report once, at the use,
                // with the elements that do not fit.
                let saved = std::mem::take(&mut self.errors);
                let mut bad = Vec::new();
                for item in *items {
                    let before = self.errors.len();
                    let _ = self.expr(file, item, ty, None, what);
                    if self.errors.len() > before {
                        bad.push(item);
                    }
                }
                self.errors = saved;
                if bad.is_empty() {
                    return true;
                }
                let mut diag = self
                    .src(file)
                    .error(
                        use_expr.span,
                        format!(
                            "mistyped {what}: expected {}, but the loop variable `{}` takes {} from its list",
                            type_name(ty),
                            ctx.var.text,
                            expr_kind_name(bad[0])
                        ),
                        format!("`{}` used here", ctx.var.text),
                    )
                    .help(format!("every element of the list must be {}", type_name(ty)));
                for item in bad {
                    diag = diag.label(item.span, expr_kind_name(item));
                }
                self.errors.push(diag);
                false
            }
            Over::Values { param, values } => {
                for v in values {
                    if conform(v, ty).is_none() {
                        self.error(
                            file,
                            use_expr.span,
                            format!(
                                "mistyped {what}: expected {}, but param `{param}` holds {}",
                                type_name(ty),
                                value_name(v)
                            ),
                            format!("an element of `{param}`"),
                            format!("every element of `{param}` must be {}", type_name(ty)),
                        );
                        return false;
                    }
                }
                true
            }
            Over::Static(elem) => {
                if assignable(elem, ty) {
                    true
                } else {
                    self.error(
                        file,
                        use_expr.span,
                        format!(
                            "mistyped {what}: expected {}, got an element of {}",
                            type_name(ty),
                            type_name(elem)
                        ),
                        type_name(elem),
                        format!("map over a list of {}", type_name(ty)),
                    );
                    false
                }
            }
        }
    }

    fn undefined(&mut self, file: FileId, name: &ast::Ident, map: Option<&MapCtx>) {
        let mut names = self.declared_names_to_suggest();
        if let Some(m) = map {
            names.push(&m.var.text);
        }
        let help = suggest(&name.text, names.iter().copied(), || {
            "define it as `param NAME = VALUE` or `NAME = op(...)`, or import the file that does"
                .to_string()
        });
        self.error(
            file,
            name.span,
            format!("undefined name `{}`", name.text),
            "not defined",
            help,
        );
    }

    fn mistyped<T>(&mut self, file: FileId, expr: &Expr, ty: &Type, what: &str) -> Option<T> {
        let got = self.describe(file, expr);
        let got = got.as_str();
        let help = match (ty, &expr.kind) {
            (Type::File, ExprKind::Str(s)) => {
                format!("to read a file write `file(\"{}\")`", s.value)
            }
            (Type::Dir | Type::Model, ExprKind::Str(s)) => {
                format!("to read a directory write `dir(\"{}\")`", s.value)
            }
            (Type::Enum(options), ExprKind::Str(s)) => {
                suggest(&s.value, options.iter().map(String::as_str), || {
                    format!("choose {}", type_name(ty))
                })
                .replace('`', "\"")
            }
            (Type::Int, ExprKind::Float(..)) => {
                "write a whole number, without a decimal point or exponent".to_string()
            }
            (Type::List(_), _) => format!(
                "write a list: `[...]` of {}",
                type_name(ty).trim_start_matches("a list of ")
            ),
            _ => format!("pass {} here", type_name(ty)),
        };
        self.error(
            file,
            expr.span,
            format!("mistyped {what}: expected {}, got {got}", type_name(ty)),
            got,
            help,
        );
        None
    }

    /// What an expression is, for messages: its kind, or for a reference
    /// what it refers to.
    fn describe(&self, file: FileId, expr: &Expr) -> String {
        let ExprKind::Ref { name, fields } = &expr.kind else {
            return expr_kind_name(expr).to_string();
        };
        let (full, fields) = self.resolve(file, name, fields);
        let name = ast::Ident {
            text: full,
            span: name.span,
        };
        match (self.decls.get(&name.text), fields.first()) {
            (Some(Decl::Param { value, .. }), _) => {
                format!("param `{}` ({})", name.text, value_name(value))
            }
            (
                Some(Decl::Node {
                    spec: Some(spec),
                    is_map,
                    ..
                }),
                None,
            ) => {
                let ty = if *is_map {
                    Type::List(Box::new(spec.produces.clone()))
                } else {
                    spec.produces.clone()
                };
                format!("node `{}` ({})", name.text, type_name(&ty))
            }
            (Some(Decl::Node { .. }), Some(field)) => format!("`{}.{}`", name.text, field.text),
            _ => format!("`{}`", name.text),
        }
    }

    /// Splits a template string into text and placeholders.
    fn template(
        &mut self,
        file: FileId,
        lit: &StrLit,
        map: Option<&MapCtx>,
    ) -> Option<Vec<TemplatePart>> {
        let s = lit.value.as_bytes();
        let at = |i: usize| lit.offsets[i.min(lit.offsets.len() - 1)];
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut ok = true;
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'{' if s.get(i + 1) == Some(&b'{') => {
                    text.push('{');
                    i += 2;
                }
                b'}' if s.get(i + 1) == Some(&b'}') => {
                    text.push('}');
                    i += 2;
                }
                b'}' => {
                    self.error(
                        file,
                        span_between(at(i), at(i) + 1),
                        "unmatched `}` in template",
                        "unmatched",
                        "write `}}` for a literal `}`",
                    );
                    ok = false;
                    i += 1;
                }
                b'{' => {
                    let Some(close) = lit.value[i + 1..].find('}').map(|c| c + i + 1) else {
                        self.error(
                            file,
                            span_between(at(i), at(i) + 1),
                            "unclosed `{` in template",
                            "opened here",
                            "close the placeholder with `}`, or write `{{` for a literal `{`",
                        );
                        ok = false;
                        break;
                    };
                    let inner = lit.value[i + 1..close].trim();
                    let span = span_between(at(i), at(close) + 1);
                    match self.placeholder(file, inner, span, map) {
                        Some(part) => {
                            if !text.is_empty() {
                                parts.push(TemplatePart::Text(std::mem::take(&mut text)));
                            }
                            parts.push(part);
                        }
                        None => ok = false,
                    }
                    i = close + 1;
                }
                _ => {
                    // Copy one whole UTF-8 character.
                    let ch = lit.value[i..].chars().next().unwrap_or('\u{fffd}');
                    text.push(ch);
                    i += ch.len_utf8().max(1);
                }
            }
        }
        if !text.is_empty() {
            parts.push(TemplatePart::Text(text));
        }
        ok.then_some(parts)
    }

    fn placeholder(
        &mut self,
        file: FileId,
        inner: &str,
        span: SourceSpan,
        map: Option<&MapCtx>,
    ) -> Option<TemplatePart> {
        if inner == "out" {
            return Some(TemplatePart::Out);
        }
        let mut pieces = inner.split('.');
        let name = pieces.next().unwrap_or("");
        let fields: Vec<&str> = pieces.collect();
        let valid = |w: &str| {
            let mut chars = w.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !valid(name) || !fields.iter().all(|f| valid(f)) {
            self.error(
                file,
                span,
                format!("`{{{inner}}}` is not a valid placeholder"),
                "bad placeholder",
                "placeholders are `{out}`, `{name}` or `{node.field}`; write `{{` and `}}` for literal braces",
            );
            return None;
        }
        let ident = ast::Ident {
            text: name.to_string(),
            span,
        };
        let field_idents: Vec<ast::Ident> = fields
            .iter()
            .map(|f| ast::Ident {
                text: f.to_string(),
                span,
            })
            .collect();
        let expr = Expr {
            kind: ExprKind::Ref {
                name: ident.clone(),
                fields: field_idents.clone(),
            },
            span,
        };
        let is_var = map.is_some_and(|m| m.var.text == name);
        if !is_var
            && !self
                .decls
                .contains_key(&self.resolve(file, &ident, &field_idents).0)
        {
            let mut names = self.declared_names_to_suggest();
            names.push("out");
            if let Some(m) = map {
                names.push(&m.var.text);
            }
            let help = suggest(name, names.iter().copied(), || {
                "placeholders name `out`, a param, a node, or the loop variable".to_string()
            });
            self.error(
                file,
                span,
                format!("unknown name `{name}` in template"),
                "not defined",
                help,
            );
            return None;
        }
        self.reference(
            file,
            &expr,
            &ident,
            &field_idents,
            &Type::Any,
            map,
            "a template placeholder",
        )
        .map(TemplatePart::Arg)
    }

    /// Reports every dependency cycle among the nodes.
    fn cycles(&mut self, nodes: &[ir::Node]) {
        let index = ir::node_index(nodes);
        let deps: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                let mut out = Vec::new();
                for arg in n.args.values().chain(n.map.as_ref().map(|m| &m.over)) {
                    collect_nodes(arg, &mut |name| {
                        if let Some(&i) = index.get(name) {
                            out.push(i);
                        }
                    });
                }
                out
            })
            .collect();
        // Depth-first, iteratively (pipelines may be long chains): 0
        // unvisited, 1 on the current path, 2 done.
        let mut state = vec![0u8; nodes.len()];
        for start in 0..nodes.len() {
            if state[start] != 0 {
                continue;
            }
            let mut path: Vec<(usize, usize)> = vec![(start, 0)];
            state[start] = 1;
            while let Some(&mut (at, ref mut edge)) = path.last_mut() {
                let Some(&next) = deps[at].get(*edge) else {
                    state[at] = 2;
                    path.pop();
                    continue;
                };
                *edge += 1;
                match state[next] {
                    0 => {
                        state[next] = 1;
                        path.push((next, 0));
                    }
                    1 => {
                        let from = path.iter().position(|&(n, _)| n == next).unwrap_or(0);
                        let cycle: Vec<usize> = path[from..].iter().map(|&(n, _)| n).collect();
                        self.report_cycle(&cycle, nodes);
                    }
                    _ => {}
                }
            }
        }
    }

    fn report_cycle(&mut self, cycle: &[usize], nodes: &[ir::Node]) {
        const SHOWN: usize = 12;
        let mut names: Vec<&str> = cycle
            .iter()
            .take(SHOWN)
            .map(|&i| nodes[i].name.as_str())
            .collect();
        let more = cycle.len().saturating_sub(SHOWN);
        let tail = if more > 0 {
            format!(" -> ... ({more} more)")
        } else {
            String::new()
        };
        names.push("");
        let path = format!(
            "{}{tail} -> {}",
            names[..names.len() - 1].join(" -> "),
            nodes[cycle[0]].name
        );
        let first = &nodes[cycle[0]];
        let mut diag = self
            .src(first.span.file)
            .error(
                first.span.span,
                format!("dependency cycle: {path}"),
                "this node depends on itself",
            )
            .help("a node cannot use its own output, directly or through other nodes; remove one of these references");
        for &i in cycle.iter().skip(1).take(SHOWN) {
            let n = &nodes[i];
            if n.span.file == first.span.file {
                diag = diag.label(n.span.span, "on the cycle");
            }
        }
        self.errors.push(diag);
    }
}

/// "a string", "an integer", ... for an expression.
fn expr_kind_name(expr: &Expr) -> &'static str {
    match &expr.kind {
        ExprKind::Str(_) => "a string",
        ExprKind::Int(..) => "an integer",
        ExprKind::Float(..) => "a float",
        ExprKind::Bool(_) => "a boolean",
        ExprKind::List(_) => "a list",
        ExprKind::Record(_) => "a record",
        ExprKind::Input { dir: true, .. } => "a directory input",
        ExprKind::Input { dir: false, .. } => "a file input",
        ExprKind::Ref { .. } => "a reference",
    }
}

/// A list whose elements are all literals is itself a literal.
fn fold_list(items: Vec<Arg>) -> Arg {
    if items.iter().all(|a| matches!(a, Arg::Lit(_))) {
        Arg::Lit(Value::List(
            items
                .into_iter()
                .map(|a| {
                    if let Arg::Lit(v) = a {
                        v
                    } else {
                        unreachable!()
                    }
                })
                .collect(),
        ))
    } else {
        Arg::List(items)
    }
}

fn fold_record(fields: BTreeMap<String, Arg>) -> Arg {
    if fields.values().all(|a| matches!(a, Arg::Lit(_))) {
        Arg::Lit(Value::Record(
            fields
                .into_iter()
                .map(|(k, a)| {
                    (
                        k,
                        if let Arg::Lit(v) = a {
                            v
                        } else {
                            unreachable!()
                        },
                    )
                })
                .collect(),
        ))
    } else {
        Arg::Record(fields)
    }
}

/// Calls `f` with every node an argument refers to.
/// The names an expression refers to, with the first word of every `{..}`
/// in its strings (a template's placeholders), for checking bindings.
fn names_used(expr: &Expr, out: &mut std::collections::BTreeSet<String>) {
    match &expr.kind {
        ExprKind::Ref { name, .. } => {
            out.insert(name.text.clone());
        }
        ExprKind::List(items) => items.iter().for_each(|e| names_used(e, out)),
        ExprKind::Record(fields) => fields.iter().for_each(|(_, e)| names_used(e, out)),
        ExprKind::Str(lit) => {
            let text = lit.value.replace("{{", "");
            for piece in text.split('{').skip(1) {
                let word: String = piece
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !word.is_empty() {
                    out.insert(word);
                }
            }
        }
        ExprKind::Int(..) | ExprKind::Float(..) | ExprKind::Bool(_) | ExprKind::Input { .. } => {}
    }
}

fn names_used_rhs(rhs: &Rhs, out: &mut std::collections::BTreeSet<String>) {
    let (call, over) = match rhs {
        Rhs::Alias(target) => return names_used(target, out),
        Rhs::Input(_) => return,
        Rhs::Call(call) => (call, None),
        Rhs::Map { call, over, .. } => (call, Some(over)),
    };
    for arg in &call.args {
        names_used(&arg.value, out);
    }
    if let Some(over) = over {
        names_used(over, out);
    }
}

pub fn collect_nodes(arg: &Arg, f: &mut impl FnMut(&str)) {
    match arg {
        Arg::Node { node, .. } => f(node),
        Arg::List(items) => items.iter().for_each(|a| collect_nodes(a, f)),
        Arg::Record(fields) => fields.values().for_each(|a| collect_nodes(a, f)),
        Arg::Template(parts) => {
            for part in parts {
                if let TemplatePart::Arg(a) = part {
                    collect_nodes(a, f);
                }
            }
        }
        Arg::Lit(_) | Arg::Param { .. } | Arg::Input { .. } | Arg::MapVar => {}
    }
}

/// An op's default template: only `{out}` and brace escapes are meaningful.
fn default_template(s: &str) -> Vec<TemplatePart> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("{{") {
            text.push('{');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("}}") {
            text.push('}');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("{out}") {
            if !text.is_empty() {
                parts.push(TemplatePart::Text(std::mem::take(&mut text)));
            }
            parts.push(TemplatePart::Out);
            rest = r;
        } else {
            let ch = rest.chars().next().unwrap_or('\u{fffd}');
            text.push(ch);
            rest = &rest[ch.len_utf8()..];
        }
    }
    if !text.is_empty() {
        parts.push(TemplatePart::Text(text));
    }
    parts
}

/// A memory size in MiB: `"512M"`, `"32G"`, `"1T"`, `"2048"` (MiB); the
/// suffix may be lower case and may end in `B` (`"16GB"`).
pub fn parse_mem_mb(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1.0 / 1024.0),
        'M' => (&t[..t.len() - 1], 1.0),
        'G' => (&t[..t.len() - 1], 1024.0),
        'T' => (&t[..t.len() - 1], 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let n: f64 = num.trim().parse().ok()?;
    let mb = (n * mult).ceil();
    (n.is_finite() && mb >= 1.0).then_some(mb as u64)
}

/// A time limit in minutes, in Slurm's spellings: `"MM"`, `"MM:SS"`,
/// `"HH:MM:SS"`, `"D-HH"`, `"D-HH:MM"`, `"D-HH:MM:SS"`. Seconds round up.
pub fn parse_time_min(text: &str) -> Option<u64> {
    let t = text.trim();
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (d.parse::<u64>().ok()?, r),
        None => (0, t),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    let dash = t.contains('-');
    let (h, m, s) = match (dash, parts.as_slice()) {
        (false, [m]) => (0, *m, 0),
        (false, [m, s]) if *s < 60 => (0, *m, *s),
        (_, [h, m, s]) if *m < 60 && *s < 60 && (!dash || *h < 24) => (*h, *m, *s),
        (true, [h]) if *h < 24 => (*h, 0, 0),
        (true, [h, m]) if *h < 24 && *m < 60 => (*h, *m, 0),
        _ => return None,
    };
    let total = days * 24 * 60 + h * 60 + m + s.div_ceil(60);
    (total >= 1).then_some(total)
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

fn show_value(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("\"{s}\""),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:?}"),
        Value::Bool(b) => b.to_string(),
        Value::List(_) => "a list".into(),
        Value::Record(_) => "a record".into(),
        Value::Path(p) => p.display().to_string(),
    }
}
