//! Error helpers shared by the checks: undefined names, mismatched types,
//! how an expression is described in a message.

use super::*;

impl<'a> Checker<'a> {
    pub(super) fn undefined(&mut self, file: FileId, name: &ast::Ident, map: Option<&MapCtx>) {
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

    pub(super) fn mistyped<T>(
        &mut self,
        file: FileId,
        expr: &Expr,
        ty: &Type,
        what: &str,
    ) -> Option<T> {
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
    pub(super) fn describe(&self, file: FileId, expr: &Expr) -> String {
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
}

/// "a string", "an integer", ... for an expression.
pub(super) fn expr_kind_name(expr: &Expr) -> &'static str {
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
