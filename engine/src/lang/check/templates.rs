//! Command templates and map variables: `{..}` placeholders and what a
//! map node's variable stands for.

use super::*;

impl<'a> Checker<'a> {
    /// Checks a use of a map variable against the type it is passed as.
    pub(super) fn map_var(
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

    /// Splits a template string into text and placeholders.
    pub(super) fn template(
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

    pub(super) fn placeholder(
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
}
