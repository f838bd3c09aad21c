//! `flow fmt`: the canonical layout of a `.flow` file.
//!
//! Statements keep their order, one per line, with at most one blank line
//! between them. A call fits on one line or takes one argument per line with
//! a trailing comma. Comments are kept: a comment on a statement's last line
//! stays there, a comment beside or above an argument stays with it, and any
//! other comment inside a statement moves to the line above it.

use super::ast::{self, Call, Expr, ExprKind, NamedArg, Rhs, Stmt, StmtKind};
use super::diag::{DiagSource, LangDiag};
use super::parse;

/// Lines longer than this are broken.
const WIDTH: usize = 100;
const INDENT: &str = "    ";

#[derive(Debug)]
struct Comment {
    start: usize,
    text: String,
}

/// Formats a file; comments are kept.
pub fn format(src: &DiagSource) -> Result<String, Vec<LangDiag>> {
    let file = parse::parse_file(src)?;
    let text = &src.text;
    let comments = find_comments(text);
    let mut out = String::new();
    let mut prev_end: Option<usize> = None;
    let mut ci = 0;
    let newlines = |a: usize, b: usize| text[a.min(b)..b].matches('\n').count();
    for stmt in &file.stmts {
        let start = stmt.span.offset();
        let end = content_end(stmt);
        // Comments before the statement: trailing the previous one, or on
        // lines of their own.
        while ci < comments.len() && comments[ci].start < start {
            let c = &comments[ci];
            let trailing = prev_end.is_some_and(|p| newlines(p, c.start) == 0);
            if trailing {
                trim_newline(&mut out);
                out.push_str("  ");
                out.push_str(&c.text);
                out.push('\n');
            } else {
                let blank = prev_end.map_or(0, |p| newlines(p, c.start)) >= 2;
                push_blank(&mut out, blank);
                out.push_str(&c.text);
                out.push('\n');
            }
            prev_end = Some(c.start + c.text.len());
            ci += 1;
        }
        let blank = prev_end.is_some_and(|p| newlines(p, start) >= 2);
        push_blank(&mut out, blank);
        let mut inner = Vec::new();
        while ci < comments.len() && comments[ci].start < end {
            inner.push(&comments[ci]);
            ci += 1;
        }
        out.push_str(&statement(stmt, &inner, text));
        out.push('\n');
        prev_end = Some(end);
    }
    for c in &comments[ci..] {
        let trailing = prev_end.is_some_and(|p| newlines(p, c.start) == 0);
        if trailing {
            trim_newline(&mut out);
            out.push_str("  ");
        } else {
            push_blank(&mut out, prev_end.map_or(0, |p| newlines(p, c.start)) >= 2);
        }
        out.push_str(&c.text);
        out.push('\n');
        prev_end = Some(c.start + c.text.len());
    }
    Ok(out)
}

/// Where a statement's last token ends. The grammar's span of an `import`
/// also covers the whitespace and comment after it (pest skips them while
/// looking for the optional `as`), and a comment there trails the line.
fn content_end(stmt: &Stmt) -> usize {
    let end = |s: &ast::Sp| s.offset() + s.len();
    match &stmt.kind {
        StmtKind::Import { path, instance } => match instance {
            None => end(&path.span),
            Some(inst) => match &inst.bindings {
                None => end(&inst.name.span),
                Some(record) => end(&record.span),
            },
        },
        _ => end(&stmt.span),
    }
}

fn trim_newline(out: &mut String) {
    if out.ends_with('\n') {
        out.pop();
    }
}

fn push_blank(out: &mut String, blank: bool) {
    if blank && !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
}

/// Every `#` comment outside strings, with its text trimmed at the end.
fn find_comments(text: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        if in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' | '\n' => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '#' {
            let end = text[i..].find(['\n', '\r']).map_or(text.len(), |e| i + e);
            out.push(Comment {
                start: i,
                text: text[i..end].trim_end().to_string(),
            });
            // Skip to the end of the line.
            while let Some((j, _)) = chars.clone().next() {
                if j >= end {
                    break;
                }
                chars.next();
            }
        }
    }
    out
}

/// Comments that belong to one argument of a broken call.
#[derive(Default)]
struct ArgComments<'a> {
    leading: Vec<&'a Comment>,
    trailing: Vec<&'a Comment>,
}

fn statement(stmt: &Stmt, inner: &[&Comment], text: &str) -> String {
    let mut hoisted: Vec<&Comment> = Vec::new();
    let body = match &stmt.kind {
        StmtKind::Import { path, instance } => {
            hoisted.extend(inner);
            match instance {
                None => format!("import {}", path.raw),
                Some(inst) => {
                    let head = format!("import {} as {}", path.raw, inst.name.text);
                    match &inst.bindings {
                        None => head,
                        Some(record) => {
                            let head = format!("{head} with ");
                            let v = expr(record, head.len(), 0);
                            format!("{head}{v}")
                        }
                    }
                }
            }
        }
        StmtKind::Param { name, value } => {
            hoisted.extend(inner);
            let head = format!("param {} = ", name.text);
            let v = expr(value, head.len(), 0);
            format!("{head}{v}")
        }
        StmtKind::Node { name, rhs } => {
            let (call, map) = match rhs {
                Rhs::Call(call) => (call, None),
                Rhs::Map {
                    call, var, over, ..
                } => (call, Some((var, over))),
                Rhs::Alias(target) | Rhs::Input(target) => {
                    let mut out: String = inner.iter().map(|c| format!("{}\n", c.text)).collect();
                    out.push_str(&format!("{} = {}", name.text, expr_flat(target)));
                    return out;
                }
            };
            let call_start = call.span.offset();
            let call_end = call_start + call.span.len();
            let mut per_arg: Vec<ArgComments> =
                call.args.iter().map(|_| ArgComments::default()).collect();
            let mut closing: Vec<&Comment> = Vec::new();
            for &c in inner {
                if c.start < call_start || c.start >= call_end || call.args.is_empty() {
                    hoisted.push(c);
                    continue;
                }
                attach(c, call, text, &mut per_arg, &mut closing);
            }
            let head = format!("{} = ", name.text);
            let (open, close) = match map {
                None => (String::new(), String::new()),
                Some((var, over)) => (
                    "[".to_string(),
                    format!(" for {} in {}]", var.text, expr(over, 0, 0)),
                ),
            };
            let forced = per_arg
                .iter()
                .any(|a| !a.leading.is_empty() || !a.trailing.is_empty())
                || !closing.is_empty();
            let flat = format!("{head}{open}{}{close}", call_flat(call));
            if !forced && flat.chars().count() <= WIDTH && !flat.contains('\n') {
                flat
            } else {
                let mut s = format!("{head}{open}{}(\n", call.op.text);
                for (arg, comments) in call.args.iter().zip(&per_arg) {
                    for c in &comments.leading {
                        s.push_str(INDENT);
                        s.push_str(&c.text);
                        s.push('\n');
                    }
                    s.push_str(INDENT);
                    s.push_str(&arg_text(arg, INDENT.len(), 1));
                    s.push(',');
                    for c in &comments.trailing {
                        s.push_str("  ");
                        s.push_str(&c.text);
                    }
                    s.push('\n');
                }
                for c in &closing {
                    s.push_str(INDENT);
                    s.push_str(&c.text);
                    s.push('\n');
                }
                s.push(')');
                s.push_str(&close);
                s
            }
        }
    };
    let mut out = String::new();
    for c in hoisted {
        out.push_str(&c.text);
        out.push('\n');
    }
    out.push_str(&body);
    out
}

/// Attaches a comment inside a call to the argument it annotates.
fn attach<'a>(
    c: &'a Comment,
    call: &Call,
    text: &str,
    per_arg: &mut [ArgComments<'a>],
    closing: &mut Vec<&'a Comment>,
) {
    for (k, arg) in call.args.iter().enumerate() {
        let start = arg.span.offset();
        let end = start + arg.span.len();
        if c.start < start {
            per_arg[k].leading.push(c);
            return;
        }
        if c.start < end {
            // Inside the argument's value: keep it just above the argument.
            per_arg[k].leading.push(c);
            return;
        }
        let next_start = call.args.get(k + 1).map(|a| a.span.offset());
        if next_start.is_none_or(|n| c.start < n) && !text[end..c.start].contains('\n') {
            per_arg[k].trailing.push(c);
            return;
        }
    }
    closing.push(c);
}

fn call_flat(call: &Call) -> String {
    let args: Vec<String> = call.args.iter().map(|a| arg_text(a, 0, 0)).collect();
    format!("{}({})", call.op.text, args.join(", "))
}

fn arg_text(arg: &NamedArg, column: usize, depth: usize) -> String {
    let head = format!("{}: ", arg.name.text);
    let v = expr(&arg.value, column + head.len(), depth);
    format!("{head}{v}")
}

/// An expression, flat when it fits from `column`, else broken with one
/// element per line at `depth` indentation.
fn expr(e: &Expr, column: usize, depth: usize) -> String {
    let flat = expr_flat(e);
    if column + flat.chars().count() <= WIDTH {
        return flat;
    }
    let indent = INDENT.repeat(depth + 1);
    let end_indent = INDENT.repeat(depth);
    match &e.kind {
        ExprKind::List(items) if !items.is_empty() => {
            let mut s = "[\n".to_string();
            for item in items {
                s.push_str(&indent);
                s.push_str(&expr(item, indent.len(), depth + 1));
                s.push_str(",\n");
            }
            s.push_str(&end_indent);
            s.push(']');
            s
        }
        ExprKind::Record(fields) if !fields.is_empty() => {
            let mut s = "{\n".to_string();
            for (key, value) in fields {
                let head = format!("{}: ", key.text);
                s.push_str(&indent);
                s.push_str(&head);
                s.push_str(&expr(value, indent.len() + head.len(), depth + 1));
                s.push_str(",\n");
            }
            s.push_str(&end_indent);
            s.push('}');
            s
        }
        _ => flat,
    }
}

fn expr_flat(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Str(s) => s.raw.clone(),
        ExprKind::Int(_, raw) | ExprKind::Float(_, raw) => raw.clone(),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::List(items) => format!(
            "[{}]",
            items.iter().map(expr_flat).collect::<Vec<_>>().join(", ")
        ),
        ExprKind::Record(fields) => {
            if fields.is_empty() {
                "{}".to_string()
            } else {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}: {}", k.text, expr_flat(v)))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
        }
        ExprKind::Ref { name, fields } => {
            let mut s = name.text.clone();
            for f in fields {
                s.push('.');
                s.push_str(&f.text);
            }
            s
        }
        ExprKind::Input { dir, path } => {
            format!("{}({})", if *dir { "dir" } else { "file" }, path.raw)
        }
    }
}
