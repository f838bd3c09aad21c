//! Nodes and calls: a node's right-hand side, a map node's `over`, an
//! op call's arguments against the op's params.

use super::*;

impl<'a> Checker<'a> {
    pub(super) fn node(
        &mut self,
        file: FileId,
        name: &ast::Ident,
        rhs: &'a Rhs,
    ) -> Option<ir::Node> {
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
    pub(super) fn over(&mut self, file: FileId, over: &'a Expr) -> (Option<Arg>, Over<'a>) {
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
    pub(super) fn call(
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
    pub(super) fn reserved_value(&mut self, file: FileId, expr: &Expr) -> Option<Value> {
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
}

/// An op's default template: only `{out}` and brace escapes are meaningful.
pub(super) fn default_template(s: &str) -> Vec<TemplatePart> {
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
