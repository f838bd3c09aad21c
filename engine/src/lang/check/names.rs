//! Declarations and name resolution: every param, node, alias and module
//! instance declared under its scope's prefix, and references resolved
//! through bindings, own definitions and the importing file.

use super::*;

impl<'a> Checker<'a> {
    /// Collects every param, node, alias and module instance name (with its
    /// namespace's prefix), reporting duplicates. Definitions that a module
    /// instance's `with {..}` replaces by a reference are not declared; a
    /// param bound to a literal takes that literal as its default.
    pub(super) fn declare(&mut self, order: &[FileId]) {
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
                            self.empty_input_path(file, path.span);
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
    pub(super) fn declared_names_to_suggest(&self) -> Vec<&str> {
        if self.errors.len() >= 2 * MAX_SHOWN {
            return Vec::new();
        }
        self.decls.keys().map(String::as_str).collect()
    }

    /// The full name of `name` declared in `file`.
    pub(super) fn own_name(&self, file: FileId, name: &str) -> String {
        qualify(&self.scopes[self.files[file].scope].prefix, name)
    }

    /// The scope made by the `import .. as NAME` in `file`.
    pub(super) fn instance_scope(&self, file: FileId, name: &ast::Ident) -> Option<ScopeId> {
        self.scopes.iter().position(|s| {
            s.origin
                .as_ref()
                .is_some_and(|o| o.file == file && o.instance.name.span == name.span)
        })
    }

    /// What the instance `scope` binds `name` to: the importing file and
    /// the binding's value.
    pub(super) fn binding(&self, scope: ScopeId, name: &str) -> Option<(FileId, &'a Expr)> {
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
    pub(super) fn resolve(
        &self,
        file: FileId,
        name: &ast::Ident,
        fields: &[ast::Ident],
    ) -> (String, Vec<ast::Ident>) {
        self.resolve_in(self.files[file].scope, name, fields, true)
    }

    pub(super) fn resolve_in(
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
}
