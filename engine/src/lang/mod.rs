//! The `.flow` language: grammar, parser, formatter and checks.
//!
//! [`load`] reads a pipeline file (and its imports), applies `--set`
//! overrides and checks everything against the op registry, producing the
//! [`ir::Pipeline`] the engine runs; [`format`] is `flow fmt`. Errors come
//! back as [`Diagnostics`]: miette reports with source spans and help lines.
//! The language is described in docs/language.md.

pub mod ast;
mod check;
pub(crate) mod diag;
mod format;
mod parse;
mod types;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::op::Registry;

use crate::ir::{self, FileId};
pub use check::{collect_nodes, normalize, parse_mem_mb, parse_time_min};
use check::{qualify, ParsedFile, Scope, ScopeId, ScopeOrigin, ROOT_SCOPE};
pub use diag::{suggest, Diagnostics};
use diag::{DiagSource, LangDiag};

/// Reads, parses and checks the pipeline at `path`.
///
/// `overrides` are the raw `NAME=VALUE` strings of `flow run --set`; each
/// value is parsed as a literal of the language (a bare word that is not a
/// literal is a string) and must match the kind of the param's default.
pub fn load(
    path: &Path,
    overrides: &[String],
    registry: &Registry,
) -> Result<ir::Pipeline, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![miette::miette!(
            help = "check the path of the pipeline file",
            "cannot read {}: {e}",
            path.display()
        )])
    })?;
    load_str(path, &text, overrides, registry)
}

/// Like [`load`], with the main file's text given; imports are still read
/// from disk, relative to `path`.
pub fn load_str(
    path: &Path,
    text: &str,
    overrides: &[String],
    registry: &Registry,
) -> Result<ir::Pipeline, Diagnostics> {
    let abs = absolute(path);
    let mut loader = Loader::default();
    loader.add(abs, text.to_string(), ROOT_SCOPE);
    if !loader.errors.is_empty() {
        return Err(Diagnostics::from_diags(loader.errors));
    }
    check::check(
        &loader.files,
        &loader.scopes,
        &loader.order,
        overrides,
        registry,
    )
    .map_err(Diagnostics::from_diags)
}

/// Formats a `.flow` file canonically (`flow fmt`): one statement per line,
/// canonical spacing, long calls broken one argument per line with a
/// trailing comma, comments kept. Formatting its own output changes nothing.
pub fn format(path: &Path, text: &str) -> Result<String, Diagnostics> {
    let src = DiagSource::new(display_name(&absolute(path)), text);
    format::format(&src).map_err(Diagnostics::from_diags)
}

/// Parses one file into its syntax tree, without resolving imports or
/// checking names (for tools and tests).
pub fn parse(path: &Path, text: &str) -> Result<ast::File, Diagnostics> {
    let src = DiagSource::new(display_name(&absolute(path)), text);
    parse::parse_file(&src).map_err(Diagnostics::from_diags)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        normalize(path)
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        normalize(&cwd.join(path))
    }
}

/// A path as diagnostics show it: relative to the working directory when
/// inside it.
fn display_name(abs: &Path) -> String {
    if let Ok(cwd) = std::env::current_dir() {
        if let Ok(rel) = abs.strip_prefix(&cwd) {
            return rel.display().to_string();
        }
    }
    abs.display().to_string()
}

/// Reads the main file and its imports, depth first.
struct Loader {
    files: Vec<ParsedFile>,
    /// Files in pipeline order: a file after everything it imports.
    order: Vec<FileId>,
    /// The root namespace and one per module instance (`import .. as NAME`).
    scopes: Vec<Scope>,
    /// Identity keys of the files being loaded (the import chain).
    stack: Vec<(PathBuf, FileId)>,
    /// Files included by plain imports, once per namespace.
    seen: HashMap<(ScopeId, PathBuf), FileId>,
    errors: Vec<LangDiag>,
    /// Set once [`MAX_LOADED_FILES`] is reached: loading stops.
    too_many_files: bool,
}

/// How many file instances one pipeline may load. Each `import .. as NAME`
/// loads its file again, so files that instantiate the next one twice
/// double the count at every level (23 levels: 4 million); this stops
/// that with an error instead of running out of time and memory.
pub const MAX_LOADED_FILES: usize = 10_000;

impl Default for Loader {
    fn default() -> Self {
        Loader {
            files: Vec::new(),
            order: Vec::new(),
            scopes: vec![Scope::root()],
            stack: Vec::new(),
            seen: HashMap::new(),
            errors: Vec::new(),
            too_many_files: false,
        }
    }
}

/// The key that identifies a file: its canonical path when it exists.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Loader {
    fn add(&mut self, path: PathBuf, text: String, scope: ScopeId) {
        let src = DiagSource::new(display_name(&path), text);
        let ast = match parse::parse_file(&src) {
            Ok(ast) => ast,
            Err(errors) => {
                self.errors.extend(errors);
                return;
            }
        };
        let id = self.files.len();
        let key = identity(&path);
        let imports: Vec<(ast::StrLit, Option<ast::Instance>)> = ast
            .stmts
            .iter()
            .filter_map(|s| match &s.kind {
                ast::StmtKind::Import { path, instance } => Some((path.clone(), instance.clone())),
                _ => None,
            })
            .collect();
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        self.files.push(ParsedFile {
            path,
            src: src.clone(),
            ast,
            scope,
        });
        self.seen.insert((scope, key.clone()), id);
        self.stack.push((key, id));
        for (import, instance) in imports {
            if self.too_many_files {
                break;
            }
            if import.value.is_empty() {
                self.errors.push(
                    src.error(import.span, "empty import path", "empty")
                        .help("write the path of a .flow file, relative to this file"),
                );
                continue;
            }
            let target = normalize(&dir.join(&import.value));
            let target_key = identity(&target);
            if let Some(pos) = self.stack.iter().position(|(k, _)| *k == target_key) {
                let mut chain: Vec<String> = self.stack[pos..]
                    .iter()
                    .map(|(_, f)| self.files[*f].src.name.clone())
                    .collect();
                chain.push(self.files[self.stack[pos].1].src.name.clone());
                self.errors.push(
                    src.error(import.span, format!("import cycle: {}", chain.join(" -> ")), "imports a file that imports this one")
                        .help("a file cannot include itself; move what both need into a third file that both import"),
                );
                continue;
            }
            if instance.is_none() && self.seen.contains_key(&(scope, target_key.clone())) {
                continue; // already included once in this namespace
            }
            if self.files.len() >= MAX_LOADED_FILES {
                let chain: Vec<String> = self
                    .stack
                    .iter()
                    .map(|(_, f)| self.files[*f].src.name.clone())
                    .chain([display_name(&target)])
                    .collect();
                self.errors.push(
                    src.error(
                        import.span,
                        format!(
                            "more than {MAX_LOADED_FILES} module instances; import chain: {}",
                            chain.join(" -> ")
                        ),
                        "one import too many",
                    )
                    .help("each `import .. as NAME` instantiates its file again, so files that import the next one more than once multiply; import a shared file once, or pass its nodes in with `with {..}`"),
                );
                self.too_many_files = true;
                break;
            }
            let text = match std::fs::read_to_string(&target) {
                Ok(text) => text,
                Err(e) => {
                    self.errors.push(
                        src.error(
                            import.span,
                            format!("cannot read import `{}`: {e}", import.value),
                            "imported here",
                        )
                        .help(format!(
                            "import paths are relative to the importing file; this one resolves to {}",
                            target.display()
                        )),
                    );
                    continue;
                }
            };
            let target_scope = match instance {
                None => scope,
                Some(instance) => {
                    self.scopes.push(Scope {
                        prefix: qualify(&self.scopes[scope].prefix, &instance.name.text),
                        parent: Some(scope),
                        origin: Some(ScopeOrigin { file: id, instance }),
                    });
                    self.scopes.len() - 1
                }
            };
            self.add(target, text, target_scope);
        }
        self.stack.pop();
        self.order.push(id);
    }
}
