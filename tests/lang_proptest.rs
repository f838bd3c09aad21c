//! The front end never panics, whatever the input: random text, token soups
//! from the grammar's vocabulary, and near-valid programs. Where a soup
//! formats, formatting is idempotent and keeps the meaning.

mod lang_common;

use std::path::Path;

use flow_engine::lang;
use lang_common::{erase_spans, load, registry};
use proptest::prelude::*;

const TOKENS: &[&str] = &[
    "param",
    "import",
    "for",
    "in",
    "true",
    "false",
    "=",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ".",
    "\n",
    "\n\n",
    "# c\n",
    "\"s\"",
    "\"{a}\"",
    "\"{out}/x\"",
    "\"{\"",
    "\"}}\"",
    "\"{a.nums}\"",
    "\"\\q\"",
    "\"\\u{41}\"",
    "1",
    "-2",
    "2e-5",
    "0.5",
    "1_000",
    "99999999999999999999",
    "a",
    "b",
    "c",
    "gen",
    "train",
    "collect",
    "slerp",
    "count",
    "cmd",
    "n",
    "base",
    "data",
    "items",
    "t",
    "file",
    "dir",
    "device",
    "\"cuda:1\"",
    "\"lora\"",
    "nums",
    "out",
    "\"x.flow\"",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(TOKENS), prop::bool::ANY), 0..40).prop_map(
        |tokens| {
            let mut s = String::new();
            for (t, space) in tokens {
                s.push_str(t);
                if space {
                    s.push(' ');
                }
            }
            s
        },
    )
}

fn value() -> BoxedStrategy<String> {
    let leaf = prop::sample::select(vec![
        "1",
        "2.5",
        "-3",
        "true",
        "\"s\"",
        "\"{a} {out}\"",
        "\"{zz}\"",
        "a",
        "a.nums",
        "a.parts",
        "t",
        "t.checkpoints",
        "p",
        "xs",
        "dir(\"d\")",
        "file(\"f\")",
        "c",
        "m",
    ])
    .prop_map(str::to_string);
    leaf.prop_recursive(3, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(inner, 0..3).prop_map(|v| {
                let fields: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("k{i}: {x}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
        ]
    })
    .boxed()
}

fn statement() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["a", "b", "t", "m", "p", "xs", "c"]);
    let op = prop::sample::select(vec!["gen", "train", "slerp", "count", "collect", "nope"]);
    let arg = prop::sample::select(vec![
        "cmd", "n", "base", "data", "other", "t", "input", "items", "tags", "device", "zz",
    ]);
    let call = (op, prop::collection::vec((arg, value()), 0..4))
        .prop_map(|(op, args)| {
            let args: Vec<String> = args.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{op}({})", args.join(", "))
        })
        .boxed();
    prop_oneof![
        (name.clone(), value()).prop_map(|(n, v)| format!("param {n} = {v}")),
        (name.clone(), call.clone()).prop_map(|(n, c)| format!("{n} = {c}")),
        (name, call, value()).prop_map(|(n, c, v)| format!("{n} = [{c} for c in {v}]")),
    ]
}

fn program() -> impl Strategy<Value = String> {
    prop::collection::vec(statement(), 0..6).prop_map(|s| s.join("\n") + "\n")
}

/// Runs every entry point; checks the formatter's laws where it succeeds.
fn exercise(text: &str) {
    let path = Path::new("/flow-lang-prop/main.flow");
    let loaded = load(text, &[]);
    let _ = lang::load_str(
        path,
        text,
        &["p=1".into(), "xs=[1]".into(), "n=x".into()],
        &registry(),
    );
    if let Err(d) = &loaded {
        // Rendering must not panic either, and never be empty.
        assert!(!d.render().is_empty());
    }
    if let Ok(formatted) = lang::format(path, text) {
        let again = lang::format(path, &formatted).expect("formatted text parses");
        assert_eq!(formatted, again, "fmt not idempotent on {text:?}");
        if let Ok(before) = &loaded {
            let after = load(&formatted, &[]).expect("formatted text loads");
            assert_eq!(
                erase_spans(before),
                erase_spans(&after),
                "fmt changed meaning of {text:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        exercise(&text);
    }

    #[test]
    fn token_soup_never_panics(text in soup()) {
        exercise(&text);
    }

    #[test]
    fn near_valid_programs_never_panic(text in program()) {
        exercise(&text);
    }

    #[test]
    fn set_values_never_panic(value in "\\PC{0,40}") {
        let text = "param n = 1\nparam s = \"x\"\nparam xs = [1.5]\n";
        for name in ["n", "s", "xs", "zz", ""] {
            let _ = load(text, &[&format!("{name}={value}")]);
        }
        let _ = load(text, &[&value]);
    }
}
