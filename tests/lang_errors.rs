//! Every kind of error: the rendered diagnostic names the problem, points at
//! the right line and column with the source snippet, and says what to do.

mod lang_common;

use lang_common::{errors, load_in, squash};

/// Asserts that `rendered` holds every piece (whitespace-insensitive).
fn has(rendered: &str, pieces: &[&str]) {
    let flat = squash(rendered);
    for piece in pieces {
        assert!(
            flat.contains(&squash(piece)),
            "missing {piece:?} in:\n{rendered}"
        );
    }
}

#[test]
fn syntax_error_points_at_the_token() {
    let r = errors("param n = 1\na = gen(cmd \"x\")\n", &[]);
    has(
        &r,
        &[
            "syntax error",
            "main.flow:2:13",
            "a = gen(cmd \"x\")",
            "arguments are named: `op(name: value, ...)`",
        ],
    );
}

#[test]
fn syntax_error_unclosed_string() {
    let r = errors("a = gen(cmd: \"x)\n", &[]);
    has(
        &r,
        &[
            "syntax error",
            "main.flow:1:",
            "must be closed with `\"` on the same line",
        ],
    );
}

#[test]
fn syntax_error_bad_escape() {
    let r = errors("a = gen(cmd: \"a\\qb\")\n", &[]);
    has(
        &r,
        &["unknown escape `\\q`", "main.flow:1:16", "escapes are"],
    );
}

#[test]
fn keyword_cannot_name_a_node() {
    let r = errors("in = gen(cmd: \"x\")\n", &[]);
    has(&r, &["syntax error", "main.flow:1:1", "`in` is a keyword"]);
}

#[test]
fn unknown_op_suggests_the_closest() {
    let r = errors(
        "param n = 1\nb = trian(base: dir(\"m\"), data: dir(\"d\"))\n",
        &[],
    );
    has(
        &r,
        &[
            "unknown op `trian`",
            "main.flow:2:5",
            "b = trian(",
            "did you mean `train`?",
        ],
    );
    let r = errors("b = zzzzzz()\n", &[]);
    has(
        &r,
        &[
            "unknown op `zzzzzz`",
            "known ops: collect, count, gen, slerp, train",
        ],
    );
}

#[test]
fn unknown_argument_suggests() {
    let r = errors("a = gen(cmd: \"x\", m: 2)\n", &[]);
    has(
        &r,
        &[
            "unknown argument `m` for op `gen`",
            "main.flow:1:19",
            "did you mean `n`?",
        ],
    );
    let r = errors("a = gen(cmd: \"x\", zzzzz: 2)\n", &[]);
    has(&r, &["unknown argument `zzzzz`", "`gen` takes: cmd, n"]);
}

#[test]
fn missing_required_argument() {
    let r = errors("\na = gen(n: 2)\n", &[]);
    has(
        &r,
        &[
            "missing required argument `cmd` of op `gen`",
            "main.flow:2:5",
            "add `cmd: ...`, a template string (the command)",
        ],
    );
}

#[test]
fn mistyped_arguments() {
    let r = errors("a = gen(cmd: \"x\", n: \"two\")\n", &[]);
    has(
        &r,
        &[
            "mistyped argument `n` of `gen`: expected an integer, got a string",
            "main.flow:1:22",
            "pass an integer here",
        ],
    );
    let r = errors("a = gen(cmd: \"x\", n: 2.5)\n", &[]);
    has(
        &r,
        &[
            "expected an integer, got a float",
            "without a decimal point",
        ],
    );
    let r = errors("c = count(input: \"data.txt\")\n", &[]);
    has(
        &r,
        &[
            "expected a file, got a string",
            "main.flow:1:18",
            "to read a file write `file(\"data.txt\")`",
        ],
    );
    let r = errors("a = gen(cmd: \"x\")\nt = train(base: a, data: a)\n", &[]);
    has(
        &r,
        &[
            "mistyped argument `base` of `train`: expected a model, got node `a` (a directory)",
            "main.flow:2:17",
        ],
    );
    let r = errors(
        "t = train(base: dir(\"m\"), data: dir(\"d\"), mode: \"lorra\")\n",
        &[],
    );
    has(
        &r,
        &[
            "expected one of \"full\", \"lora\", got a string",
            "did you mean \"lora\"?",
        ],
    );
    let r = errors(
        "t = slerp(base: dir(\"m\"), other: dir(\"m\"), t: \"half\")\n",
        &[],
    );
    has(
        &r,
        &["expected a number or a list of numbers, got a string"],
    );
    let r = errors(
        "t = slerp(base: dir(\"m\"), other: file(\"m\"), t: 1)\n",
        &[],
    );
    has(
        &r,
        &["argument `other` of `slerp`: expected a model, got a file input"],
    );
    let r = errors("param n = \"3\"\na = gen(cmd: \"x\", n: n)\n", &[]);
    has(
        &r,
        &[
            "expected an integer, got param `n` (a string)",
            "main.flow:2:22",
        ],
    );
    let r = errors("a = collect(items: [dir(\"a\"), 3])\n", &[]);
    has(
        &r,
        &[
            "an element of argument `items` of `collect`: expected a directory, got an integer",
            "main.flow:1:31",
        ],
    );
    let r = errors("a = gen(cmd: \"x\")\nc = count(input: a)\n", &[]);
    has(
        &r,
        &["expected a file, got node `a` (a directory)", "`a.NAME`"],
    );
}

#[test]
fn map_variable_is_typed_by_its_list() {
    let r = errors(
        "a = gen(cmd: \"x\")\nm = [train(base: c, data: a) for c in [1, 2]]\n",
        &[],
    );
    has(&r, &["mistyped argument `base` of `train`: expected a model, but the loop variable `c` takes an integer from its list", "main.flow:2:18", "`c` used here", "every element of the list must be a model"]);
    assert_eq!(
        lang_common::load(
            "a = gen(cmd: \"x\")\nm = [train(base: c, data: a) for c in [1, 2]]\n",
            &[]
        )
        .unwrap_err()
        .len(),
        1
    );
    let r = errors(
        "param xs = [\"a\"]\nm = [gen(cmd: \"x\", n: c) for c in xs]\n",
        &[],
    );
    has(&r, &["expected an integer, but param `xs` holds a string"]);
    let r = errors("a = gen(cmd: \"x\")\nm = [count(input: c) for c in a.parts]\nn = [count(input: c) for c in a]\n", &[]);
    has(
        &r,
        &[
            "a map runs over a list, not node `a` (a directory)",
            "main.flow:3:31",
            "a node output of list type",
        ],
    );
    assert_eq!(
        lang_common::load(
            "a = gen(cmd: \"x\")\nm = [count(input: c) for c in a.parts]\n",
            &[]
        )
        .unwrap()
        .nodes
        .len(),
        2
    );
}

#[test]
fn undefined_reference_suggests() {
    let r = errors(
        "alpha = gen(cmd: \"x\")\nb = count(input: alpah.nums)\n",
        &[],
    );
    has(
        &r,
        &[
            "undefined name `alpah`",
            "main.flow:2:18",
            "did you mean `alpha`?",
        ],
    );
    let r = errors("b = count(input: qqqq)\n", &[]);
    has(
        &r,
        &["undefined name `qqqq`", "define it as `param NAME = VALUE`"],
    );
}

#[test]
fn unknown_field_lists_the_outputs() {
    let r = errors("a = gen(cmd: \"x\")\nb = count(input: a.numz)\n", &[]);
    has(
        &r,
        &[
            "`a` (op `gen`) has no output `numz`",
            "main.flow:2:20",
            "did you mean `nums`?",
        ],
    );
    let r = errors("a = gen(cmd: \"x\")\nb = count(input: a.zzzzzzz)\n", &[]);
    has(&r, &["op `gen` declares: nums, parts"]);
    let r = errors("param p = 1\nb = count(input: p.x)\n", &[]);
    has(&r, &["`p` is a param; params have no fields"]);
}

#[test]
fn cycle_prints_its_path() {
    let r = errors(
        "a = gen(cmd: \"{c}\")\nb = gen(cmd: \"{a}\")\nc = count(input: b.nums)\n",
        &[],
    );
    has(
        &r,
        &[
            "dependency cycle: a -> c -> b -> a",
            "main.flow:1:1",
            "remove one of these references",
        ],
    );
    let r = errors("a = gen(cmd: \"{a}\")\n", &[]);
    has(&r, &["dependency cycle: a -> a"]);
}

#[test]
fn duplicate_names_point_at_both() {
    let r = errors(
        "param a = 1\nb = gen(cmd: \"x\")\na = gen(cmd: \"y\")\n",
        &[],
    );
    has(
        &r,
        &[
            "duplicate name `a`",
            "main.flow:3:1",
            "defined again here",
            "first defined here",
            "share one namespace",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.flow"), "\nx = gen(cmd: \"x\")\n").unwrap();
    let r = load_in(
        dir.path(),
        "import \"lib.flow\"\nx = gen(cmd: \"y\")\n",
        &[],
    )
    .unwrap_err()
    .render();
    has(
        &r,
        &[
            "duplicate name `x`",
            "main.flow:2:1",
            "`x` is first defined in",
            "lib.flow:2:1",
        ],
    );
}

#[test]
fn import_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.flow"), "import \"b.flow\"\n").unwrap();
    std::fs::write(
        dir.path().join("b.flow"),
        "x = gen(cmd: \"x\")\nimport \"main.flow\"\n",
    )
    .unwrap();
    let r = load_in(dir.path(), "import \"a.flow\"\n", &[])
        .unwrap_err()
        .render();
    has(
        &r,
        &[
            "import cycle:",
            "main.flow -> ",
            "a.flow -> ",
            "b.flow -> ",
            "b.flow:2:8",
            "move what both need",
        ],
    );
    let r = load_in(dir.path(), "\nimport \"nope.flow\"\n", &[])
        .unwrap_err()
        .render();
    has(
        &r,
        &[
            "cannot read import `nope.flow`",
            "main.flow:2:8",
            "relative to the importing file",
        ],
    );
    std::fs::write(dir.path().join("bad.flow"), "x = = 1\n").unwrap();
    let r = load_in(dir.path(), "import \"bad.flow\"\n", &[])
        .unwrap_err()
        .render();
    has(&r, &["syntax error", "bad.flow:1:5"]);
}

#[test]
fn bad_set_values() {
    let text = "param lr = 2e-5\nparam n = 3\n";
    let r = errors(text, &["lrr=1"]);
    has(
        &r,
        &[
            "`--set`: unknown param `lrr`",
            "--set:1:1",
            "did you mean `lr`?",
        ],
    );
    let r = errors(text, &["n=abc"]);
    has(
        &r,
        &[
            "`--set n`: expected an integer like the default, got a string",
            "--set:1:3",
            "the default of `n` is 3",
        ],
    );
    let r = errors(text, &["lr=true"]);
    has(&r, &["expected a float like the default, got a boolean"]);
    let r = errors(text, &["n=[1,"]);
    has(
        &r,
        &[
            "`--set n`: `[1,` is not a valid value",
            "a bare word is a string",
        ],
    );
    let r = errors(text, &["n"]);
    has(&r, &["bad `--set n`: expected NAME=VALUE"]);
    let r = errors("a = gen(cmd: \"x\")\n", &["a=1"]);
    has(
        &r,
        &["unknown param `a`", "`a` is a node; only params can be set"],
    );
}

#[test]
fn template_errors_point_into_the_string() {
    let r = errors("param n = 1\na = gen(cmd: \"seq {nn} > {out}\")\n", &[]);
    has(
        &r,
        &[
            "unknown name `nn` in template",
            "main.flow:2:19",
            "{nn}",
            "did you mean `n`?",
        ],
    );
    let r = errors("a = gen(cmd: \"echo {x\")\n", &[]);
    has(
        &r,
        &[
            "unclosed `{` in template",
            "main.flow:1:20",
            "write `{{` for a literal `{`",
        ],
    );
    let r = errors("a = gen(cmd: \"echo x}\")\n", &[]);
    has(
        &r,
        &["unmatched `}` in template", "main.flow:1:21", "write `}}`"],
    );
    let r = errors("a = gen(cmd: \"echo {a b}\")\n", &[]);
    has(&r, &["`{a b}` is not a valid placeholder"]);
    let r = errors("a = gen(cmd: \"x\")\nb = gen(cmd: \"{a.nope}\")\n", &[]);
    has(&r, &["has no output `nope`"]);
    // Escapes shift offsets: the span still lands on the placeholder.
    let r = errors("a = gen(cmd: \"\\t\\\"{zz}\")\n", &[]);
    has(&r, &["unknown name `zz`", "main.flow:1:19"]);
}

#[test]
fn other_errors() {
    let r = errors("out = gen(cmd: \"x\")\n", &[]);
    has(&r, &["`out` is a reserved name", "main.flow:1:1"]);
    let r = errors("a = gen(cmd: \"x\", device: \"gpu\")\n", &[]);
    has(&r, &["bad device \"gpu\"", "main.flow:1:27", "\"cuda:N\""]);
    let r = errors("a = gen(cmd: \"x\")\nparam p = a\n", &[]);
    has(
        &r,
        &[
            "a param's value must be a literal, not a reference to `a`",
            "main.flow:2:11",
        ],
    );
    let r = errors("a = gen(cmd: \"x\", n: 1, n: 2)\n", &[]);
    has(&r, &["argument `n` is given twice", "main.flow:1:25"]);
    let r = errors(
        "a = gen(cmd: \"x\")\nm = [count(input: a.nums) for a in [1]]\n",
        &[],
    );
    has(&r, &["the loop variable `a` hides a name"]);

    let r = errors("param big = 99999999999999999999\n", &[]);
    has(&r, &["does not fit in 64 bits"]);
}

#[test]
fn several_errors_are_reported_together() {
    let r = errors(
        "a = gen(cmd: \"x\", n: \"s\")\nb = nope(x: 1)\nc = count(input: zz)\n",
        &[],
    );
    has(
        &r,
        &[
            "expected an integer",
            "unknown op `nope`",
            "undefined name `zz`",
            "3 errors",
        ],
    );
    let d = lang_common::load("a = gen(cmd: \"x\", n: \"s\")\nb = nope(x: 1)\n", &[]).unwrap_err();
    assert_eq!(d.0.len(), 2);
    // Every report carries a help line.
    for report in &d.0 {
        assert!(report.help().is_some(), "no help in {report:?}");
    }
}

#[test]
fn more_type_rules() {
    // A map node's field is a list: not a single file.
    let r = errors(
        "a = gen(cmd: \"x\")\nm = [train(base: dir(\"b\"), data: a) for x in [1]]\nc = count(input: m.log)\n",
        &[],
    );
    has(
        &r,
        &[
            "expected a file, got `m.log` (a list of files)",
            "main.flow:3:18",
        ],
    );
    // A list param for an either-typed argument; a string param is not a number.
    let ok = lang_common::load(
        "param ts = [0.5, 1]\nm = slerp(base: dir(\"a\"), other: dir(\"b\"), t: ts)\n",
        &[],
    );
    assert!(ok.is_ok(), "{}", ok.unwrap_err());
    let r = errors(
        "param ts = \"half\"\nm = slerp(base: dir(\"a\"), other: dir(\"b\"), t: ts)\n",
        &[],
    );
    has(
        &r,
        &["expected a number or a list of numbers, got param `ts` (a string)"],
    );
    // An undefined name inside an either-typed argument is reported as such.
    let r = errors(
        "m = slerp(base: dir(\"a\"), other: dir(\"b\"), t: [tt])\n",
        &[],
    );
    has(&r, &["undefined name `tt`"]);
    let r = errors("a = collect(items: [], meta: {k: 1, k: 2})\n", &[]);
    has(&r, &["duplicate field `k`", "main.flow:1:37"]);
    let r = errors("c = count(input: file(\"\"))\n", &[]);
    has(&r, &["empty input path"]);
    let r = errors("a = gen(cmd: \"x\", device: 1)\n", &[]);
    has(&r, &["bad device", "main.flow:1:27"]);
    let r = errors("a = gen(cmd: \"x\", n: true)\n", &[]);
    has(&r, &["expected an integer, got a boolean"]);
    let r = errors("a = collect(items: dir(\"x\"))\n", &[]);
    has(
        &r,
        &[
            "expected a list of directories, got a directory input",
            "write a list",
        ],
    );
}

#[test]
fn unknown_op_does_not_cascade() {
    let d = lang_common::load(
        "a = nope(x: 1)\nb = count(input: a.nums)\nc = gen(cmd: \"{a}\")\n",
        &[],
    )
    .unwrap_err();
    assert_eq!(d.len(), 1, "{}", d.render());
}

#[test]
fn diagnostics_display_renders_every_report() {
    let d = lang_common::load("a = nope(x: 1)\nb = nope2()\n", &[]).unwrap_err();
    let shown = format!("{d}");
    assert!(
        shown.contains("unknown op `nope`") && shown.contains("unknown op `nope2`"),
        "{shown}"
    );
    assert!(
        !d.render().contains('\u{1b}'),
        "render() has no colour codes"
    );
}

#[test]
fn alias_errors() {
    let r = errors("a = gen(cmd: \"x\")\nb = zz\n", &[]);
    has(&r, &["undefined name `zz`", "main.flow:2:5"]);
    let r = errors("a = b\nb = a\n", &[]);
    has(&r, &["alias cycle: a -> b -> a", "main.flow:1:5"]);
    let r = errors("param p = 1\nb = p\n", &[]);
    has(&r, &["`b` is an alias of the param `p`"]);
    let r = errors("a = gen(cmd: \"x\")\nb = a.numz\n", &[]);
    has(
        &r,
        &[
            "has no output `numz`",
            "main.flow:2:7",
            "did you mean `nums`?",
        ],
    );
    let r = errors(
        "a = gen(cmd: \"x\")\nb = a.nums\nc = count(input: b.x)\n",
        &[],
    );
    has(&r, &["only one level of field access"]);
}

/// A list nested `depth` deep as the value of a param: `[[..[]..]]`.
fn nested_list(depth: usize) -> String {
    format!("param p = {}{}\n", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
    // 5,754 levels overflowed the stack in every command.
    let r = errors(&nested_list(5_754), &[]);
    has(
        &r,
        &[
            "expression nested too deeply (more than 256 levels of brackets)",
            // `param p = ` is 10 columns; level 257 opens at column 267.
            "main.flow:1:267",
            "level 257 starts here",
        ],
    );
    let records = format!("param p = {}1{}\n", "{a: ".repeat(4_188), "}".repeat(4_188));
    has(&errors(&records, &[]), &["nested too deeply"]);
    // Formatting parses too, and stops at the same limit.
    let err = flow_engine::lang::format(std::path::Path::new("deep.flow"), &nested_list(5_754))
        .unwrap_err();
    has(&err.render(), &["nested too deeply", "deep.flow:1:267"]);
}

#[test]
fn nesting_at_the_limit_checks_and_formats() {
    let text = nested_list(256);
    lang_common::load(&text, &[]).expect("256 levels are allowed");
    flow_engine::lang::format(std::path::Path::new("deep.flow"), &text).expect("formats");
    // Brackets in strings and comments are not nesting.
    let quoted = format!(
        "param p = \"{}\" # {}\n",
        "[".repeat(1_000),
        "{".repeat(1_000)
    );
    lang_common::load(&quoted, &[]).expect("brackets in strings and comments");
}

#[test]
fn an_error_past_column_65535_is_reported_without_the_excerpt() {
    // miette's renderer panicked past column 65,535.
    let long = "x".repeat(70_000);
    let r = errors(&format!("param p = \"{long}\" oops\n"), &[]);
    has(
        &r,
        &[
            "syntax error",
            "main.flow:1:70014: unexpected `o`",
            "the line is too long to show",
        ],
    );
    assert!(
        !r.contains(&long),
        "the line itself is not shown:\n{r:.300}"
    );
    let r = errors(&format!("a = gen(cmd: \"{long}\", zz: 1)\n"), &[]);
    has(
        &r,
        &[
            "unknown argument `zz`",
            "main.flow:1:70018: not an argument of this op",
        ],
    );
    // Short lines of the same file keep their excerpt.
    let r = errors(&format!("param p = \"{long}\"\nb = zzzz(x: 1)\n"), &[]);
    has(
        &r,
        &["unknown op `zzzz`", "main.flow:2:5", "b = zzzz(x: 1)"],
    );
}

#[test]
fn only_the_first_50_errors_are_shown() {
    let text: String = (0..120).map(|i| format!("n{i} = zzzz()\n")).collect();
    let r = errors(&text, &[]);
    assert_eq!(r.matches("unknown op `zzzz`").count(), 50, "{r:.2000}");
    has(&r, &["and 70 more errors (120 in all; fix these first)"]);
}

/// `a0 = gen(..)`, `a1 = a0`, ..., `a{n-1} = a{n-2}`, and a node using the
/// last alias.
fn alias_chain(n: usize) -> String {
    let mut text = String::from("a0 = gen(cmd: \"x\")\n");
    for i in 1..n {
        text.push_str(&format!("a{i} = a{}\n", i - 1));
    }
    text.push_str(&format!("c = count(input: a{}.nums)\n", n - 1));
    text
}

#[test]
fn a_long_alias_chain_is_resolved_once() {
    // Each alias used to walk its chain to the end, and each step searched
    // the names seen so far: cubic, 27 s for 4,000 aliases. At 20,000 that
    // would be hours; resolved once per alias, it is a fraction of a second.
    // (No timing is asserted: the old code simply does not finish.)
    let p = lang_common::load(&alias_chain(20_000), &[]).expect("checks");
    assert_eq!(p.nodes.len(), 2);
    let c = p.nodes.iter().find(|n| n.name == "c").unwrap();
    match &c.args["input"] {
        flow_engine::ir::Arg::Node { node, field, .. } => {
            assert_eq!((node.as_str(), field.as_deref()), ("a0", Some("nums")))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn many_errors_are_found_without_quadratic_suggestions() {
    // 8,000 undefined aliases each compared their name with every other
    // name for a "did you mean": about 90 s and 1.8 GB before.
    let text: String = (0..8_000).map(|i| format!("a{i} = zz{i}\n")).collect();
    let err = lang_common::load(&text, &[]).unwrap_err();
    assert_eq!(err.len(), 8_000);
    has(
        &err.render(),
        &["undefined name `zz0`", "and 7950 more errors"],
    );
}

#[test]
fn alias_cycles_and_chains_with_fields() {
    let r = errors("c = a\na = b\nb = a\n", &[]);
    has(&r, &["alias cycle: a -> b -> a"]);
    assert_eq!(r.matches("alias cycle").count(), 1, "{r}");
    let r = errors("n = gen(cmd: \"x\")\na = n.nums\nb = a.nums\nc = b\n", &[]);
    has(
        &r,
        &[
            "only one level of field access",
            "main.flow:3:5",
            "main.flow:4:5",
        ],
    );
}

/// Adversarial run, issue 12 item 11: `t: 1e308` wrote an all-NaN model.
/// A number outside a param's declared range is an error before anything
/// runs, whether it is a literal, inside a list, a param, a `--set`
/// override, or an element a map node takes.
#[test]
fn a_number_outside_the_declared_range_is_an_error_at_check() {
    let r = errors(
        "m = slerp(base: dir(\"a\"), other: dir(\"b\"), t: 1e308)\n",
        &[],
    );
    has(
        &r,
        &[
            "argument `t` of `slerp` is 1e308, outside [0, 1]",
            "main.flow:1:47",
            "`t` takes numbers from 0 to 1: the interpolation weight",
        ],
    );
    let r = errors(
        "m = slerp(base: dir(\"a\"), other: dir(\"b\"), t: [0.2, -0.5])\n",
        &[],
    );
    has(&r, &["argument `t` of `slerp` is -0.5, outside [0, 1]"]);
    let r = errors(
        "param t = 0.5\nm = slerp(base: dir(\"a\"), other: dir(\"b\"), t: t)\n",
        &["t=2"],
    );
    has(&r, &["is 2 (from param `t`), outside [0, 1]"]);
    let r = errors(
        "m = [slerp(base: dir(\"a\"), other: dir(\"b\"), t: x) for x in [0.5, 3]]\n",
        &[],
    );
    has(&r, &["argument `t` of `slerp` is 3, outside [0, 1]"]);
    // The bounds are inclusive.
    let ok = lang_common::load(
        "m = slerp(base: dir(\"a\"), other: dir(\"b\"), t: [0, 1])\n",
        &[],
    );
    assert!(ok.is_ok(), "{}", ok.unwrap_err());
}

/// The stdlib ops' enum strings and ranges come from their params structs
/// and specs (`Type::enum_of`, `Param::within`): `flow check` rejects a
/// wrong value with a span before anything runs, as it does for the test
/// registry's ops above.
#[test]
fn stdlib_ops_reject_a_wrong_enum_value_and_an_out_of_range_number_at_check() {
    let real = |text: &str| match flow_engine::lang::load_str(
        std::path::Path::new("/flow-lang-test/main.flow"),
        text,
        &[],
        &flow_stdlib::registry(),
    ) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(d) => d.render(),
    };
    let r = real("t = train(model: dir(\"m\"), data: dir(\"d\"), schedule: \"cosin\")\n");
    has(
        &r,
        &[
            "argument `schedule` of `train`",
            "expected one of \"cosine\", \"linear\", \"constant\", got a string",
            "main.flow:1:54",
            "did you mean \"cosine\"?",
        ],
    );
    let r = real("t = train(model: dir(\"m\"), data: dir(\"d\"), dtype: \"fp16\")\n");
    has(
        &r,
        &[
            "expected one of \"float32\", \"bfloat16\", \"float16\", got a string",
            "main.flow:1:51",
        ],
    );
    let r = real("t = train(model: dir(\"m\"), data: dir(\"d\"), micro_batch: 0)\n");
    has(
        &r,
        &[
            "argument `micro_batch` of `train` is 0, below 1",
            "main.flow:1:57",
            "`micro_batch` takes numbers from 1 up",
        ],
    );
    let r = real("d = dedup(corpus: dir(\"c\"), bands: 600)\n");
    has(
        &r,
        &[
            "argument `bands` of `dedup` is 600, outside [1, 512]",
            "main.flow:1:36",
        ],
    );
}
