//! Module bindings (`import .. as NAME with {..}`) and aliases: what each
//! binding and alias stands for, chains and cycles among them.

use super::*;

impl<'a> Checker<'a> {
    /// Checks every module instance's `with {..}`: each key names a param,
    /// node or alias the module defines (a node or alias only by a
    /// reference), or a name the module uses without defining it.
    pub(super) fn check_bindings(&mut self) {
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
    pub(super) fn alias_target(&self, name: &str) -> AliasTarget {
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
    pub(super) fn resolve_aliases(&mut self, names: &[String]) {
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
    pub(super) fn check_aliases(&mut self) {
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
}

/// The names an expression refers to, with the first word of every `{..}`
/// in its strings (a template's placeholders), for checking bindings.
pub(super) fn names_used(expr: &Expr, out: &mut std::collections::BTreeSet<String>) {
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

pub(super) fn names_used_rhs(rhs: &Rhs, out: &mut std::collections::BTreeSet<String>) {
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
