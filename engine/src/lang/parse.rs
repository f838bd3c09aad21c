//! Text to syntax tree: the pest grammar (`flow.pest`) and the tree builder.

use miette::SourceSpan;
use pest::iterators::Pair;
use pest::Parser;

use super::ast::*;
use super::diag::{DiagSource, LangDiag};

#[derive(pest_derive::Parser)]
#[grammar = "engine/src/lang/flow.pest"]
struct FlowParser;

/// How deeply brackets (`(`, `[`, `{`) may nest. The parser, the checker
/// and the formatter all recurse once per level, so a deeper file would
/// overflow the stack; no real pipeline nests more than a handful.
pub const MAX_NESTING: usize = 256;

/// Rejects text nesting brackets deeper than [`MAX_NESTING`], before any
/// recursive pass sees it. Brackets inside strings and comments do not
/// count; a string ends at its closing quote or the end of its line, as in
/// the grammar.
fn check_nesting(src: &DiagSource) -> Result<(), Vec<LangDiag>> {
    let mut depth = 0usize;
    let mut chars = src.text.char_indices();
    let (mut in_string, mut in_comment) = (false, false);
    while let Some((at, c)) = chars.next() {
        if c == '\n' {
            (in_string, in_comment) = (false, false);
            continue;
        }
        if in_comment {
            continue;
        }
        if in_string {
            match c {
                // An escape takes the next character, but never the newline
                // that ends the string.
                '\\' if chars.clone().next().is_some_and(|(_, next)| next != '\n') => {
                    chars.next();
                }
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => in_string = true,
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(vec![src
                        .error(
                            SourceSpan::new(at.into(), 1),
                            format!("expression nested too deeply (more than {MAX_NESTING} levels of brackets)"),
                            format!("level {depth} starts here"),
                        )
                        .help(format!("lists, records and calls may nest at most {MAX_NESTING} deep; flatten the value or read it from a file"))]);
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a whole file.
pub fn parse_file(src: &DiagSource) -> Result<File, Vec<LangDiag>> {
    check_nesting(src)?;
    // Track the tokens tried at the furthest position, for precise errors.
    pest::set_error_detail(true);
    let mut pairs =
        FlowParser::parse(Rule::file, &src.text).map_err(|e| vec![syntax_error(src, e)])?;
    let file = pairs.next().expect("the file rule always yields one pair");
    let mut builder = Builder {
        src,
        errors: Vec::new(),
    };
    let mut stmts = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::EOI => {}
            _ => stmts.push(builder.stmt(pair)),
        }
    }
    if builder.errors.is_empty() {
        Ok(File { stmts })
    } else {
        Err(builder.errors)
    }
}

/// Parses one literal (a `--set` value); `Ok(None)` when the text is not a
/// literal at all.
pub fn parse_literal(src: &DiagSource) -> Result<Option<Expr>, Vec<LangDiag>> {
    check_nesting(src)?;
    match FlowParser::parse(Rule::set_value, &src.text) {
        Ok(mut pairs) => {
            let top = pairs.next().expect("set_value yields one pair");
            let mut builder = Builder {
                src,
                errors: Vec::new(),
            };
            let inner = top.into_inner().next().expect("set_value holds a literal");
            let expr = builder.expr(inner);
            if builder.errors.is_empty() {
                Ok(Some(expr))
            } else {
                Err(builder.errors)
            }
        }
        Err(e) => {
            let first = src.text.trim_start().chars().next();
            // Text that starts like a literal but does not parse is a syntax
            // error; anything else is a bare word, taken as a string.
            if matches!(first, Some('"' | '[' | '{')) {
                Err(vec![syntax_error(src, e)])
            } else {
                Ok(None)
            }
        }
    }
}

fn rule_name(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of file",
        Rule::file => "a statement",
        Rule::param_stmt => "a `param` statement",
        Rule::import_stmt => "an `import` statement",
        Rule::node_stmt => "a node definition (`name = op(...)`)",
        Rule::map_expr => "a map (`[op(...) for x in list]`)",
        Rule::call => "an op call (`op(arg: value)`)",
        Rule::arg => "an argument (`name: value`)",
        Rule::input => "`file(\"...\")` or `dir(\"...\")`",
        Rule::input_kind => "`file` or `dir`",
        Rule::list => "a list",
        Rule::record => "a record",
        Rule::field => "a record field (`name: value`)",
        Rule::reference => "a name",
        Rule::float => "a number",
        Rule::int => "an integer",
        Rule::bool => "`true` or `false`",
        Rule::string => "a string",
        Rule::str_inner => "string characters",
        Rule::ident => "a name",
        Rule::keyword => "a keyword",
        Rule::kw_param => "`param`",
        Rule::kw_import => "`import`",
        Rule::kw_for => "`for`",
        Rule::kw_in => "`in`",
        Rule::kw_as => "`as`",
        Rule::kw_with => "`with`",
        Rule::set_value => "a value",
        _ => "a token",
    }
    .to_string()
}

fn syntax_error(src: &DiagSource, e: pest::error::Error<Rule>) -> LangDiag {
    let (mut start, mut end) = match e.location {
        pest::error::InputLocation::Pos(p) => (p, p),
        pest::error::InputLocation::Span((s, e)) => (s, e),
    };
    let mut expected = None;
    if let Some(attempts) = e.parse_attempts() {
        // pest reports where the failing rule began; the furthest token
        // tried is usually where the mistake is.
        let tokens: Vec<String> = attempts
            .expected_tokens()
            .iter()
            .map(|t| t.to_string())
            // Character ranges (`a..z`) and `_` come from names: noise.
            .filter(|t| {
                !t.trim().is_empty()
                    && t != "#"
                    && t != "_"
                    && !(t.chars().count() == 4 && t.contains(".."))
            })
            .map(|t| format!("`{t}`"))
            .collect();
        if attempts.max_position > start && !tokens.is_empty() {
            start = attempts.max_position;
            end = start;
            expected = Some(format!("expected {}", join_or(&tokens)));
        }
    }
    if let Some(diag) = keyword_as_name(src, start) {
        return diag;
    }
    let e = e.renamed_rules(rule_name);
    let expected = expected.unwrap_or_else(|| e.variant.message().to_string());
    let found = src.text[start.min(src.text.len())..]
        .chars()
        .next()
        .map(|c| match c {
            '\n' | '\r' => "end of line".to_string(),
            c => format!("`{c}`"),
        })
        .unwrap_or_else(|| "end of file".to_string());
    let len = if end > start {
        end - start
    } else {
        usize::from(start < src.text.len())
    };
    let len = if found == "end of line" { 0 } else { len };
    let help = syntax_help(src, start);
    src.error(
        SourceSpan::new(start.into(), len),
        format!("syntax error: {expected}"),
        format!("unexpected {found}"),
    )
    .help(help)
}

const KEYWORDS: [&str; 6] = ["param", "import", "for", "in", "true", "false"];

/// A statement `KEYWORD = ...`: a reserved word used as a name.
fn keyword_as_name(src: &DiagSource, at: usize) -> Option<LangDiag> {
    let at = at.min(src.text.len());
    let line_start = src.text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = &src.text[line_start..];
    let indent = line.len() - line.trim_start().len();
    let word: String = line
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let rest = line.trim_start()[word.len()..].trim_start();
    let is_param_name = word == "param" && {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        KEYWORDS.contains(&name.as_str()).then_some(name)
    }
    .is_some();
    if KEYWORDS.contains(&word.as_str()) && rest.starts_with('=') && !rest.starts_with("==") {
        let span = SourceSpan::new((line_start + indent).into(), word.len());
        return Some(
            src.error(
                span,
                format!("syntax error: `{word}` is a reserved word"),
                "reserved",
            )
            .help(format!(
                "`{word}` is a keyword and cannot name a node or param; choose another name"
            )),
        );
    }
    if is_param_name {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let offset = line_start + indent + (line.trim_start().len() - rest.len());
        return Some(
            src.error(
                SourceSpan::new(offset.into(), name.len()),
                format!("syntax error: `{name}` is a reserved word"),
                "reserved",
            )
            .help(format!(
                "`{name}` is a keyword and cannot name a node or param; choose another name"
            )),
        );
    }
    None
}

fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A hint for the most common slips, judged from the text around the error.
fn syntax_help(src: &DiagSource, at: usize) -> String {
    let line_start = src.text[..at.min(src.text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = src.text[line_start..].lines().next().unwrap_or("");
    let unescaped_quotes = line
        .replace("\\\\", "")
        .replace("\\\"", "")
        .matches('"')
        .count();
    if unescaped_quotes % 2 == 1 {
        return "a string must be closed with `\"` on the same line".into();
    }
    if line.contains('(') && line.contains('=') && !line.contains(':') {
        return "arguments are named: `op(name: value, ...)`".into();
    }
    if let Some(word) = line.split_whitespace().next() {
        if ["param", "import", "for", "in", "true", "false"].contains(&word.trim_end_matches('='))
            && line.contains('=')
            && !line.starts_with("param ")
        {
            return format!("`{word}` is a keyword and cannot name a node or param");
        }
    }
    "statements are `param NAME = VALUE`, `NAME = op(arg: value, ...)`, `NAME = [op(...) for X in LIST]` or `import \"FILE\"`, one per line".into()
}

struct Builder<'a> {
    src: &'a DiagSource,
    errors: Vec<LangDiag>,
}

fn span_of(pair: &Pair<Rule>) -> SourceSpan {
    let s = pair.as_span();
    SourceSpan::new(s.start().into(), s.end() - s.start())
}

fn is_keyword(pair: &Pair<Rule>) -> bool {
    matches!(
        pair.as_rule(),
        Rule::kw_param | Rule::kw_import | Rule::kw_for | Rule::kw_in | Rule::kw_as | Rule::kw_with
    )
}

impl Builder<'_> {
    fn ident(&self, pair: Pair<Rule>) -> Ident {
        Ident {
            text: pair.as_str().to_string(),
            span: span_of(&pair),
        }
    }

    fn stmt(&mut self, pair: Pair<Rule>) -> Stmt {
        let span = span_of(&pair);
        let rule = pair.as_rule();
        let mut inner = pair.into_inner().filter(|p| !is_keyword(p));
        let kind = match rule {
            Rule::param_stmt => {
                let name = self.ident(inner.next().expect("param name"));
                let value = self.expr(inner.next().expect("param value"));
                StmtKind::Param { name, value }
            }
            Rule::import_stmt => {
                let path = self.string(inner.next().expect("import path"));
                let instance = inner.next().map(|name| Instance {
                    name: self.ident(name),
                    bindings: inner.next().map(|record| self.expr(record)),
                });
                StmtKind::Import { path, instance }
            }
            Rule::node_stmt => {
                let name = self.ident(inner.next().expect("node name"));
                let rhs = inner.next().expect("node value");
                let rhs = match rhs.as_rule() {
                    Rule::map_expr => {
                        let span = span_of(&rhs);
                        let mut parts = rhs.into_inner().filter(|p| !is_keyword(p));
                        let call = self.call(parts.next().expect("map call"));
                        let var = self.ident(parts.next().expect("map var"));
                        let over = self.expr(parts.next().expect("map list"));
                        Rhs::Map {
                            call,
                            var,
                            over,
                            span,
                        }
                    }
                    Rule::reference => Rhs::Alias(self.expr(rhs)),
                    Rule::input => Rhs::Input(self.expr(rhs)),
                    _ => Rhs::Call(self.call(rhs)),
                };
                StmtKind::Node { name, rhs }
            }
            other => unreachable!("unexpected statement rule {other:?}"),
        };
        Stmt { kind, span }
    }

    fn call(&mut self, pair: Pair<Rule>) -> Call {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        let op = self.ident(inner.next().expect("op name"));
        let args = inner
            .map(|arg| {
                let span = span_of(&arg);
                let mut parts = arg.into_inner();
                let name = self.ident(parts.next().expect("arg name"));
                let value = self.expr(parts.next().expect("arg value"));
                NamedArg { name, value, span }
            })
            .collect();
        Call { op, args, span }
    }

    fn expr(&mut self, pair: Pair<Rule>) -> Expr {
        let span = span_of(&pair);
        let kind = match pair.as_rule() {
            Rule::string => ExprKind::Str(self.string(pair)),
            Rule::int => {
                let raw = pair.as_str().to_string();
                match raw.replace('_', "").parse::<i64>() {
                    Ok(v) => ExprKind::Int(v, raw),
                    Err(_) => {
                        self.errors.push(
                            self.src
                                .error(span, format!("integer `{raw}` does not fit in 64 bits"), "too large")
                                .help("integers range from -9223372036854775808 to 9223372036854775807; write a float (`1e20`) for larger numbers"),
                        );
                        ExprKind::Int(0, raw)
                    }
                }
            }
            Rule::float => {
                let raw = pair.as_str().to_string();
                match raw.replace('_', "").parse::<f64>() {
                    Ok(v) if v.is_finite() => ExprKind::Float(v, raw),
                    _ => {
                        self.errors.push(
                            self.src
                                .error(
                                    span,
                                    format!("number `{raw}` is out of range"),
                                    "not a finite float",
                                )
                                .help("floats must lie within ±1.7e308"),
                        );
                        ExprKind::Float(0.0, raw)
                    }
                }
            }
            Rule::bool => ExprKind::Bool(pair.as_str() == "true"),
            Rule::list => ExprKind::List(pair.into_inner().map(|p| self.expr(p)).collect()),
            Rule::record => ExprKind::Record(
                pair.into_inner()
                    .map(|field| {
                        let mut parts = field.into_inner();
                        let key = self.ident(parts.next().expect("field name"));
                        let value = self.expr(parts.next().expect("field value"));
                        (key, value)
                    })
                    .collect(),
            ),
            Rule::reference => {
                let mut parts = pair.into_inner();
                let name = self.ident(parts.next().expect("reference name"));
                let fields = parts.map(|p| self.ident(p)).collect();
                ExprKind::Ref { name, fields }
            }
            Rule::input => {
                let mut parts = pair.into_inner();
                let dir = parts.next().expect("input kind").as_str() == "dir";
                let path = self.string(parts.next().expect("input path"));
                ExprKind::Input { dir, path }
            }
            other => unreachable!("unexpected expression rule {other:?}"),
        };
        Expr { kind, span }
    }

    fn string(&mut self, pair: Pair<Rule>) -> StrLit {
        let span = span_of(&pair);
        let raw = pair.as_str().to_string();
        let start = pair.as_span().start() + 1;
        let body = &raw[1..raw.len() - 1];
        let mut value = String::new();
        let mut offsets = Vec::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let at = start + i;
            let push = |value: &mut String, offsets: &mut Vec<usize>, ch: char| {
                for _ in 0..ch.len_utf8() {
                    offsets.push(at);
                }
                value.push(ch);
            };
            if c != '\\' {
                push(&mut value, &mut offsets, c);
                continue;
            }
            let Some((_, e)) = chars.next() else { break };
            let decoded = match e {
                'n' => Some('\n'),
                't' => Some('\t'),
                'r' => Some('\r'),
                '0' => Some('\0'),
                '\\' => Some('\\'),
                '"' => Some('"'),
                'u' => {
                    // \u{XXXX}
                    let rest = &body[i + 2..];
                    let parsed = rest
                        .strip_prefix('{')
                        .and_then(|r| r.find('}').map(|end| &r[..end]))
                        .and_then(|hex| {
                            u32::from_str_radix(hex, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .map(|c| (c, hex.len()))
                        });
                    match parsed {
                        Some((ch, hex_len)) => {
                            for _ in 0..hex_len + 2 {
                                chars.next();
                            }
                            Some(ch)
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            match decoded {
                Some(ch) => push(&mut value, &mut offsets, ch),
                None => {
                    let len = 1 + e.len_utf8();
                    self.errors.push(
                        self.src
                            .error(SourceSpan::new(at.into(), len), format!("unknown escape `\\{e}` in string"), "unknown escape")
                            .help("escapes are \\n \\t \\r \\0 \\\\ \\\" and \\u{HEX}; write `\\\\` for a backslash"),
                    );
                }
            }
        }
        offsets.push(start + body.len());
        StrLit {
            value,
            offsets,
            raw,
            span,
        }
    }
}
