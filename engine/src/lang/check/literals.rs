//! Literal values: param defaults, `--set` overrides.

use super::*;

impl<'a> Checker<'a> {
    /// Evaluates a literal expression (a param's value).
    pub(super) fn literal(&mut self, file: FileId, expr: &Expr) -> Option<Value> {
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
            ExprKind::Record(fields) => self
                .record_fields(file, fields, |c, _, value| c.literal(file, value))
                .map(Value::Record),
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

    pub(super) fn apply_overrides(&mut self, overrides: &[String]) {
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

    pub(super) fn literal_standalone(&mut self, expr: &Expr) -> Option<Value> {
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
}

pub(super) fn show_value(v: &Value) -> String {
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
