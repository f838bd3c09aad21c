//! The report document: Markdown and HTML built side by side, tables,
//! figures, and the number formatting they share.

use super::*;

/// What the report calls a model or a result it was given no name for.
pub(super) use crate::model::generate::short_model_name;

/// The artifacts given to the report parameter `param`, read in order.
pub(super) fn read_param<T: JsonFile>(paths: &[PathBuf], param: &str) -> OpResult<Vec<T>> {
    paths
        .iter()
        .map(|p| T::read(p).wrap_err_with(|| format!("report: parameter `{param}`")))
        .collect()
}

/// The optimizer step of a result's training lineage.
pub(super) fn step_of(ck: Option<&CheckpointLineage>) -> Option<u64> {
    ck?.step
}

/// The tokens seen of a result's training lineage.
pub(super) fn tokens_of(ck: Option<&CheckpointLineage>) -> Option<f64> {
    ck?.tokens_seen.map(|t| t as f64)
}

/// The training FLOPs of a result's training lineage.
pub(super) fn flops_of(ck: Option<&CheckpointLineage>) -> Option<f64> {
    ck?.flops
}

pub(super) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |x| format!("{x:.digits$}"))
}

pub(super) fn sci(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |x| format!("{x:.3e}"))
}

/// One table: a header and rows, rendered as Markdown and HTML.
pub(super) struct Table {
    pub(super) header: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn markdown(&self) -> String {
        let mut s = format!(
            "| {} |\n|{}\n",
            self.header.join(" | "),
            " --- |".repeat(self.header.len())
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} |",
                r.iter()
                    .map(|c| c.replace('|', "\\|"))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
        }
        s
    }
    pub(super) fn html(&self) -> String {
        let mut s = String::from("<table><thead><tr>");
        for h in &self.header {
            let _ = write!(s, "<th>{}</th>", esc(h));
        }
        s.push_str("</tr></thead><tbody>");
        for r in &self.rows {
            s.push_str("<tr>");
            for c in r {
                let _ = write!(s, "<td>{}</td>", esc(c));
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table>\n");
        s
    }
}

pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Accumulates both documents section by section.
pub(super) struct Doc {
    pub(super) md: String,
    pub(super) html: String,
    pub(super) figures: Vec<String>,
}

impl Doc {
    pub(super) fn heading(&mut self, text: &str) {
        let _ = writeln!(self.md, "\n## {text}\n");
        let _ = writeln!(self.html, "<h2>{}</h2>", esc(text));
    }
    pub(super) fn para(&mut self, text: &str) {
        let _ = writeln!(self.md, "{text}\n");
        let _ = writeln!(self.html, "<p>{}</p>", esc(text));
    }
    /// A table of `header` and `rows` (one cell per header).
    pub(super) fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        let t = Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        };
        self.md.push_str(&t.markdown());
        self.md.push('\n');
        self.html.push_str(&t.html());
    }
    pub(super) fn figure(
        &mut self,
        dir: &Path,
        stem: &str,
        chart: &Chart,
        caption: &str,
    ) -> OpResult<()> {
        let svg = render(dir, stem, chart).map_err(|e| miette!("drawing {stem}: {e}"))?;
        let _ = writeln!(
            self.md,
            "![{caption}]({stem}.png)\n\n*{caption}* ([SVG]({stem}.svg))\n"
        );
        let body = svg.find("<svg").map_or(svg.as_str(), |i| &svg[i..]);
        let _ = writeln!(
            self.html,
            "<figure>{body}<figcaption>{}</figcaption></figure>",
            esc(caption)
        );
        self.figures.push(stem.to_owned());
        Ok(())
    }
}
