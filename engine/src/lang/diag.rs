//! Diagnostics of the front end: a message, labelled spans in one source file,
//! a help line, and related notes that may point into other files.

use std::fmt;
use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};

/// One front-end error.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct LangDiag {
    pub message: String,
    #[source_code]
    pub src: NamedSource<Arc<str>>,
    #[label(collection)]
    pub labels: Vec<LabeledSpan>,
    #[help]
    pub help: Option<String>,
    #[related]
    pub related: Vec<LangDiag>,
}

/// A source file as diagnostics show it. The text is shared: every error
/// in a file points at the same copy.
#[derive(Clone, Debug)]
pub struct DiagSource {
    pub name: String,
    pub text: Arc<str>,
}

impl DiagSource {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        DiagSource {
            name: name.into(),
            text: Arc::from(text.into()),
        }
    }

    /// An error with one primary label.
    pub fn error(
        &self,
        span: SourceSpan,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> LangDiag {
        LangDiag {
            message: message.into(),
            src: NamedSource::new(&self.name, Arc::clone(&self.text)).with_language("flow"),
            labels: vec![LabeledSpan::new_primary_with_span(Some(label.into()), span)],
            help: None,
            related: Vec::new(),
        }
    }
}

impl LangDiag {
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn label(mut self, span: SourceSpan, label: impl Into<String>) -> Self {
        self.labels
            .push(LabeledSpan::new_with_span(Some(label.into()), span));
        self
    }
    pub fn related(mut self, note: LangDiag) -> Self {
        self.related.push(note);
        self
    }

    /// This diagnostic without its source excerpt when a label sits on a
    /// line too long to show: each label becomes a `file:line:col: label`
    /// line of the message. miette's renderer panics past column 65,535,
    /// and an excerpt of such a line would be unreadable anyway.
    fn plain_if_lines_too_long(mut self) -> LangDiag {
        self.related = self
            .related
            .into_iter()
            .map(LangDiag::plain_if_lines_too_long)
            .collect();
        let text: &str = self.src.inner();
        if !self
            .labels
            .iter()
            .any(|l| line_too_long_to_show(text, l.offset()))
        {
            return self;
        }
        for label in std::mem::take(&mut self.labels) {
            let (line, column) = line_and_column(text, label.offset());
            self.message.push_str(&format!(
                "\n  at {}:{line}:{column}: {}",
                self.src.name(),
                label.label().unwrap_or("here")
            ));
        }
        self.help = Some(match self.help.take() {
            Some(help) => format!("{help} (the line is too long to show)"),
            None => "the line is too long to show".to_string(),
        });
        self
    }
}

/// The longest line (in bytes) a diagnostic shows as a source excerpt.
const MAX_EXCERPT_LINE: usize = 10_000;

/// Whether the line holding byte `offset` of `text` is too long for an
/// excerpt (miette's renderer panics past column 65,535).
pub fn line_too_long_to_show(text: &str, offset: usize) -> bool {
    let at = floor_char_boundary(text, offset);
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    line_end - line_start > MAX_EXCERPT_LINE
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, offset: usize) -> usize {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// How many reports `render` shows; the rest are counted.
pub const MAX_SHOWN: usize = 50;

/// Every error found in a pipeline, each a `miette` report with its source,
/// a labelled span and a help line. `Display` renders them all.
pub struct Diagnostics(pub Vec<miette::Report>);

impl Diagnostics {
    pub(crate) fn from_diags(diags: Vec<LangDiag>) -> Self {
        // A module imported twice (`import .. as a`, `.. as b`) is checked
        // twice; its own mistakes are reported once.
        let mut seen = std::collections::HashSet::new();
        Diagnostics(
            diags
                .into_iter()
                .filter(|d| {
                    let labels: Vec<(usize, usize)> =
                        d.labels.iter().map(|l| (l.offset(), l.len())).collect();
                    seen.insert((d.src.name().to_string(), d.message.clone(), labels))
                })
                .map(|d| miette::Report::new(d.plain_if_lines_too_long()))
                .collect(),
        )
    }

    /// Renders every report with miette's graphical handler, without colour.
    pub fn render(&self) -> String {
        self.render_with(GraphicalTheme::unicode_nocolor())
    }

    fn render_with(&self, theme: GraphicalTheme) -> String {
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let mut out = String::new();
        // Thousands of errors help nobody; the first ones say what is wrong.
        for report in self.0.iter().take(MAX_SHOWN) {
            let diagnostic: &dyn Diagnostic = report.as_ref();
            if handler.render_report(&mut out, diagnostic).is_err() {
                out.push_str(&format!("error: {report}\n"));
            }
            out.push('\n');
        }
        if self.0.len() > MAX_SHOWN {
            out.push_str(&format!(
                "and {} more errors ({} in all; fix these first)\n",
                self.0.len() - MAX_SHOWN,
                self.0.len()
            ));
        } else if self.0.len() > 1 {
            out.push_str(&format!("{} errors\n", self.0.len()));
        }
        out
    }

    /// The number of reports.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no reports.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    /// Renders all reports; colour only when stderr is a terminal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::io::IsTerminal;
        let theme = if std::io::stderr().is_terminal() {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        f.write_str(&self.render_with(theme))
    }
}

impl fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

/// Edit distance between two names, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| {
            let longest = name.chars().count().max(c.chars().count());
            *d <= limit && (*d < longest || longest == 1)
        })
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// "did you mean `x`?" or a fallback help.
pub fn suggest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
    fallback: impl FnOnce() -> String,
) -> String {
    match closest(name, candidates) {
        Some(c) => format!("did you mean `{c}`?"),
        None => fallback(),
    }
}
