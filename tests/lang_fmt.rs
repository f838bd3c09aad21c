//! `flow fmt`: canonical layout, idempotent, comments kept, meaning kept.

mod lang_common;

use std::path::{Path, PathBuf};

use flow_engine::lang;
use lang_common::{erase_spans, load};

/// Pipelines in every style the formatter must handle.
const EXAMPLES: &[&str] = &[
    r#"# A pipeline with every form.
param lr = 2e-5     # learning rate
param n=1_000
param tags = ["a","b" ,   "c"]
param rec = {k: 1, s: "x"}


a = gen(cmd: "seq {n} > {out}/nums")  # numbers
b=gen( cmd:"wc -l < {a}/nums > {out}/count" , n : 2 )
# about t
t = train(base: dir("models/base"), data: a, lr: lr, epochs: 3, mode: "lora", device: "cuda:0")
merged = [slerp(base: t, other: c, t: 0.5) for c in t.checkpoints]
again = [slerp(base: t, other: m, t: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5]) for m in merged]
all = collect(
    # the inputs
    items: [a, b, dir("extra")],  # three of them
    meta: {who: "me", when: 2026, why: "because the alternative is much worse and this line is long"},
    tags: tags,
    # stray comment before the close
)
c = count(input: file("data/x.txt"))
# the end
"#,
    "a = gen(cmd: \"x\")",
    "\n\n# only comments\n\n\n# and more\n",
    "",
    "param xs = [1, 2, 3] # c1\nm = [gen(cmd: \"{v}\", n: v) # inside a map\n for v in xs]\n",
    "param long = [\"aaaaaaaaaaaaaaaaaaaa\", \"bbbbbbbbbbbbbbbbbbbbbbb\", \"cccccccccccccccccccccc\", \"ddddddddddddddddddddd\"]\n",
    "a = gen(cmd: \"x\")\r\nb = gen(cmd: \"{a} # not a comment\") # a comment\r\n",
];

fn fmt(text: &str) -> String {
    lang::format(Path::new("/flow-lang-test/main.flow"), text).unwrap_or_else(|d| panic!("{d}"))
}

fn check_roundtrip(text: &str) {
    let once = fmt(text);
    let twice = fmt(&once);
    assert_eq!(
        once, twice,
        "fmt is not idempotent on:\n{text}\n--- first:\n{once}"
    );
    match load(text, &[]) {
        Ok(before) => {
            let after = load(&once, &[])
                .unwrap_or_else(|d| panic!("formatted text does not load: {d}\n{once}"));
            assert_eq!(
                erase_spans(&before),
                erase_spans(&after),
                "fmt changed the meaning of:\n{text}\n---\n{once}"
            );
        }
        Err(_) => {
            // Pipelines for other registries: the syntax tree must be kept.
            let a = lang::parse(Path::new("x.flow"), text).map(|f| f.stmts.len());
            let b = lang::parse(Path::new("x.flow"), &once).map(|f| f.stmts.len());
            assert_eq!(a.ok(), b.ok());
        }
    }
    // Every comment survives.
    for line in text.lines() {
        if let Some(i) = line.find("# ") {
            let comment = line[i..].trim_end();
            if !line[..i].contains('"') {
                assert!(once.contains(comment), "lost comment {comment:?}:\n{once}");
            }
        }
    }
    for line in once.lines() {
        assert!(
            line.chars().count() <= 100 || !line.contains(", "),
            "line too long: {line}"
        );
        assert_eq!(line, line.trim_end(), "trailing spaces");
    }
}

#[test]
fn examples_roundtrip() {
    for text in EXAMPLES {
        check_roundtrip(text);
    }
}

#[test]
fn canonical_layout() {
    let text = "param  lr=2e-5 #lr\n\n\n\nparam n = 1_000\na=gen(cmd:\"x {n}\",n:2)   # trailing\n# leading\nb = collect(items: [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a], flag: true)\nm = [gen(cmd: \"{v}\") for v in [1,2]]\n";
    let expected = "param lr = 2e-5  #lr\n\nparam n = 1_000\na = gen(cmd: \"x {n}\", n: 2)  # trailing\n# leading\nb = collect(\n    items: [a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a],\n    flag: true,\n)\nm = [gen(cmd: \"{v}\") for v in [1, 2]]\n";
    assert_eq!(fmt(text), expected);
}

#[test]
fn comments_inside_calls_stay_with_their_argument() {
    let text = "a = gen(cmd: \"x\", # the command\n n: 2)\n";
    let expected = "a = gen(\n    cmd: \"x\",  # the command\n    n: 2,\n)\n";
    assert_eq!(fmt(text), expected);
    let text = "a = gen(\n    # first\n    cmd: \"x\",\n    # last\n)\n";
    assert_eq!(fmt(text), text);
}

#[test]
fn long_values_break_one_element_per_line() {
    let text = "a = collect(items: [dir(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"), dir(\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\")])\n";
    let expected = "a = collect(\n    items: [\n        dir(\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"),\n        dir(\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"),\n    ],\n)\n";
    assert_eq!(fmt(text), expected);
    check_roundtrip(text);
}

#[test]
fn imports_aliases_and_inputs_keep_their_trailing_comments() {
    let text = "import \"x.flow\"   # one\nimport   \"y.flow\"  as  y   with {a:b ,c : 1}  # two\nw=file( \"w.txt\" )# three\nal =  w # four\n";
    let expected = "import \"x.flow\"  # one\nimport \"y.flow\" as y with {a: b, c: 1}  # two\nw = file(\"w.txt\")  # three\nal = w  # four\n";
    assert_eq!(fmt(text), expected);
    let long = "import \"stages/adapt.flow\" as qwen_0_5b with {source: qwen_0_5b_instruct, larger: qwen_1_5b_instruct, lr: 1e-5}\n";
    let expected = "import \"stages/adapt.flow\" as qwen_0_5b with {\n    source: qwen_0_5b_instruct,\n    larger: qwen_1_5b_instruct,\n    lr: 1e-5,\n}\n";
    assert_eq!(fmt(long), expected);
    check_roundtrip(long);
}

#[test]
fn syntax_errors_are_reported_not_formatted() {
    let err = lang::format(
        Path::new("/flow-lang-test/main.flow"),
        "a = gen(cmd: \"x\"\n",
    )
    .unwrap_err();
    assert!(err.render().contains("syntax error"), "{}", err.render());
}

fn flow_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            flow_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "flow") {
            out.push(path);
        }
    }
}

/// The pipelines shipped in the repository, and the examples of the
/// language reference.
#[test]
fn shipped_pipelines_roundtrip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    flow_files(&root.join("pipelines"), &mut files);
    flow_files(&root.join("data"), &mut files);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let once = fmt(&text);
        assert_eq!(
            once,
            fmt(&once),
            "fmt is not idempotent on {}",
            file.display()
        );
        let before = lang::parse(file, &text).unwrap();
        let after = lang::parse(file, &once).unwrap();
        assert_eq!(before.stmts.len(), after.stmts.len(), "{}", file.display());
        if let Ok(p) = lang::load(file, &[], &flow_stdlib::registry()) {
            let q = lang::load_str(file, &once, &[], &flow_stdlib::registry()).unwrap();
            assert_eq!(erase_spans(&p), erase_spans(&q), "{}", file.display());
        }
    }
    let doc = std::fs::read_to_string(root.join("docs/language.md")).unwrap_or_default();
    let mut in_block = false;
    let mut block = String::new();
    let mut blocks = 0;
    for line in doc.lines() {
        if line.trim_start().starts_with("```flow") {
            in_block = true;
            block.clear();
        } else if in_block && line.trim_start().starts_with("```") {
            in_block = false;
            if lang::parse(Path::new("doc.flow"), &block).is_ok() {
                let once = fmt(&block);
                assert_eq!(once, fmt(&once), "not idempotent on doc example:\n{block}");
                blocks += 1;
            }
        } else if in_block {
            block.push_str(line);
            block.push('\n');
        }
    }
    if !doc.is_empty() {
        assert!(
            blocks > 5,
            "the language reference should have parseable examples"
        );
    }
}
