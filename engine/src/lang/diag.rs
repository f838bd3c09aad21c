//! Diagnostics of the front end: a message, labelled spans in one source file,
//! a help line, and related notes that may point into other files.

use std::fmt;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan,
};

/// One front-end error.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{message}")]
pub struct LangDiag {
    pub message: String,
    #[source_code]
    pub src: NamedSource<String>,
    #[label(collection)]
    pub labels: Vec<LabeledSpan>,
    #[help]
    pub help: Option<String>,
    #[related]
    pub related: Vec<LangDiag>,
}

/// A source file as diagnostics show it.
#[derive(Clone, Debug)]
pub struct DiagSource {
    pub name: String,
    pub text: String,
}

impl DiagSource {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        DiagSource {
            name: name.into(),
            text: text.into(),
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
            src: NamedSource::new(self.name.clone(), self.text.clone()).with_language("flow"),
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
}

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
                .map(miette::Report::new)
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
        for report in &self.0 {
            let diagnostic: &dyn Diagnostic = report.as_ref();
            if handler.render_report(&mut out, diagnostic).is_err() {
                out.push_str(&format!("error: {report}\n"));
            }
            out.push('\n');
        }
        if self.0.len() > 1 {
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
