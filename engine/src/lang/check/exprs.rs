//! Argument expressions: types, references to nodes, outputs and params.

use super::*;

impl<'a> Checker<'a> {
    /// Checks an expression against a declared type and resolves it.
    pub(super) fn expr(
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
                self.record_fields(file, fields, |c, key, value| {
                    let what = format!("field `{key}` of {what}");
                    c.expr(file, value, &Type::Any, map, &what)
                })
                .map(fold_record)
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
                    self.empty_input_path(file, path.span);
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
    pub(super) fn reference(
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
    pub(super) fn resolved_reference(
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
}

/// The value of an argument the caller found to be a literal.
fn into_literal(arg: Arg) -> Value {
    match arg {
        Arg::Lit(v) => v,
        _ => unreachable!("checked to be a literal"),
    }
}

/// A list whose elements are all literals is itself a literal.
pub(super) fn fold_list(items: Vec<Arg>) -> Arg {
    if items.iter().all(|a| matches!(a, Arg::Lit(_))) {
        Arg::Lit(Value::List(items.into_iter().map(into_literal).collect()))
    } else {
        Arg::List(items)
    }
}

pub(super) fn fold_record(fields: BTreeMap<String, Arg>) -> Arg {
    if fields.values().all(|a| matches!(a, Arg::Lit(_))) {
        Arg::Lit(Value::Record(
            fields
                .into_iter()
                .map(|(k, a)| (k, into_literal(a)))
                .collect(),
        ))
    } else {
        Arg::Record(fields)
    }
}

/// Calls `f` with every node an argument refers to.
pub fn collect_nodes(arg: &Arg, f: &mut impl FnMut(&str)) {
    arg.for_each_leaf(&mut |a| {
        if let Arg::Node { node, .. } = a {
            f(node)
        }
    })
}
