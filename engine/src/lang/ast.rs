//! The syntax tree of one `.flow` file, before names and types are checked.

use miette::SourceSpan;

/// A byte range in the file being parsed.
pub type Sp = SourceSpan;

/// A name with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub text: String,
    pub span: Sp,
}

/// One parsed file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub stmts: Vec<Stmt>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    /// The whole statement.
    pub span: Sp,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `param NAME = VALUE`
    Param { name: Ident, value: Expr },
    /// `import "PATH"`, or `import "PATH" as NAME with {..}`
    Import {
        path: StrLit,
        instance: Option<Instance>,
    },
    /// `NAME = op(...)`, `NAME = [op(...) for VAR in OVER]` or `NAME = other`
    Node { name: Ident, rhs: Rhs },
}

/// `as NAME with {BINDINGS}`: the imported file becomes a module instance
/// whose names are `NAME.x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    pub name: Ident,
    /// The `with {..}` record: each field names something of the module and
    /// gives what it stands for in this instance. `None` without `with`.
    pub bindings: Option<Expr>,
}

impl Instance {
    /// The bindings as (name, value) pairs.
    pub fn bindings(&self) -> &[(Ident, Expr)] {
        match &self.bindings {
            Some(Expr {
                kind: ExprKind::Record(fields),
                ..
            }) => fields,
            _ => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rhs {
    Call(Call),
    /// `NAME = other` or `NAME = node.field`: another name for a node.
    Alias(Expr),
    /// `NAME = file("path")` or `NAME = dir("path")`: a name for an input.
    Input(Expr),
    Map {
        call: Call,
        var: Ident,
        over: Expr,
        span: Sp,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub op: Ident,
    pub args: Vec<NamedArg>,
    pub span: Sp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NamedArg {
    pub name: Ident,
    pub value: Expr,
    pub span: Sp,
}

/// A string literal: its decoded text, and where each decoded byte came from
/// (so a template placeholder's span points at the source).
#[derive(Clone, Debug, PartialEq)]
pub struct StrLit {
    pub value: String,
    /// `offsets[i]` is the source offset of decoded byte `i`; one extra entry
    /// for the end.
    pub offsets: Vec<usize>,
    /// The source text including the quotes (the formatter prints it).
    pub raw: String,
    pub span: Sp,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Sp,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Str(StrLit),
    /// The value and its source spelling (kept by the formatter).
    Int(i64, String),
    Float(f64, String),
    Bool(bool),
    List(Vec<Expr>),
    Record(Vec<(Ident, Expr)>),
    /// `name` or `name.field` (more fields parse, and are rejected later).
    Ref {
        name: Ident,
        fields: Vec<Ident>,
    },
    /// `file("path")` / `dir("path")`.
    Input {
        dir: bool,
        path: StrLit,
    },
}
