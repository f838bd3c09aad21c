//! Which files an `input` parameter names.

use super::*;

/// A compiled `pattern` of the `input` parameter: without a `/` it is
/// matched against file names, with one against paths relative to the
/// directory. `*` and `?` stop at `/`, `**` crosses it, `{a,b}` alternates
/// (globset's rules, as in ripgrep).
pub struct InputPattern {
    glob: globset::GlobMatcher,
    on_paths: bool,
}

impl InputPattern {
    pub fn new(pattern: &str) -> OpResult<InputPattern> {
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                miette!(
                    help = "`*`, `**`, `?`, `[a-z]` and `{a,b}` are the glob's special characters",
                    "parameter `pattern`: {pattern:?} is not a valid glob: {e}"
                )
            })?
            .compile_matcher();
        Ok(InputPattern {
            glob,
            on_paths: pattern.contains('/'),
        })
    }

    /// Whether `rel` (a path relative to the searched directory) matches.
    pub fn matches(&self, rel: &Path) -> bool {
        if self.on_paths {
            self.glob.is_match(rel)
        } else {
            rel.file_name().is_some_and(|n| self.glob.is_match(n))
        }
    }
}

/// The files under `root` that match, hidden files left out, in name order.
pub(super) fn walk(root: &Path, pattern: &InputPattern) -> OpResult<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
    {
        let entry = entry
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read directory {}", root.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !entry.file_type().is_file() || hidden {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        if pattern.matches(rel) {
            out.push(entry.path().to_path_buf());
        }
    }
    Ok(out)
}

/// Resolves the `input` parameter: a file, a list of files, or a directory
/// searched recursively for files matching `pattern`. Sorted, deduplicated.
pub fn resolve_inputs(input: &[PathBuf], pattern: &str) -> OpResult<Vec<PathBuf>> {
    let glob = InputPattern::new(pattern)?;
    let mut out = Vec::new();
    for path in input {
        if path.is_dir() {
            let found = walk(path, &glob)?;
            if found.is_empty() {
                return Err(miette!(
                    help = "check `pattern` (matched against file names; with a `/`, against paths relative to the directory)",
                    "no file in {} matches pattern {pattern:?}",
                    path.display()
                ));
            }
            out.extend(found);
        } else if path.is_file() {
            out.push(path.clone());
        } else {
            return Err(miette!("input {} does not exist", path.display()));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err(miette!("parameter `input`: no files given"));
    }
    Ok(out)
}
