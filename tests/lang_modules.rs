//! Module instances (`import "f.flow" as NAME with {..}`) and named inputs
//! (`NAME = file("..")`): how names resolve, what bindings may replace, and
//! the errors when they are misused.

mod lang_common;

use std::path::Path;

use flow_engine::ir::{Arg, Node, Pipeline};
use flow_engine::op::Value;
use lang_common::{load_in, squash};

fn node<'a>(p: &'a Pipeline, name: &str) -> &'a Node {
    p.nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}: {:?}", names(p)))
}

fn names(p: &Pipeline) -> Vec<&str> {
    p.nodes.iter().map(|n| n.name.as_str()).collect()
}

fn node_ref(arg: &Arg) -> (&str, Option<&str>) {
    match arg {
        Arg::Node { node, field, .. } => (node.as_str(), field.as_deref()),
        other => panic!("not a node reference: {other:?}"),
    }
}

/// A directory with `files` written into it.
fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn errors_in(dir: &Path, main: &str) -> String {
    match load_in(dir, main, &[]) {
        Ok(p) => panic!("expected an error, got nodes {:?}", names(&p)),
        Err(d) => squash(&d.render()),
    }
}

/// A module that trains on `base` and merges every checkpoint; `base` and
/// `data` are names it uses without defining them.
const STAGE: &str = "\
param lr = 2e-5
tuned = train(base: base, data: data, lr: lr)
merged = [slerp(base: base, other: c, t: 0.5) for c in tuned.checkpoints]
";

#[test]
fn an_instance_prefixes_the_module_names_and_binds_its_free_names() {
    let dir = project(&[("stages/adapt.flow", STAGE)]);
    let main = "\
data = gen(cmd: \"seq 3 > {out}/n\")
small = train(base: dir(\"models/small\"), data: data)
large = dir(\"models/large\")
import \"stages/adapt.flow\" as s with {base: small}
import \"stages/adapt.flow\" as l with {base: large, lr: 1e-5}
both = collect(items: [s.tuned, l.tuned], extra: s.merged)
";
    let p = load_in(dir.path(), main, &[]).unwrap();
    assert_eq!(
        names(&p),
        ["s.tuned", "s.merged", "l.tuned", "l.merged", "data", "small", "both"],
        "modules come first, each instance with its own prefix"
    );
    let s = node(&p, "s.tuned");
    assert_eq!(
        node_ref(&s.args["base"]),
        ("small", None),
        "bound by `with`"
    );
    assert_eq!(
        node_ref(&s.args["data"]),
        ("data", None),
        "a free name falls through to the importing file"
    );
    assert_eq!(
        s.args["lr"],
        Arg::Param {
            name: "s.lr".into(),
            value: Value::Float(2e-5)
        },
        "each instance has its own params"
    );
    match &node(&p, "l.tuned").args["base"] {
        Arg::Input { path, .. } => assert_eq!(path, &dir.path().join("models/large")),
        other => panic!("a binding to a named input passes the input: {other:?}"),
    }
    assert_eq!(
        p.params["l.lr"].value,
        Value::Float(1e-5),
        "a literal binding sets the default"
    );
    let merged = node(&p, "l.merged");
    assert_eq!(
        node_ref(&merged.map.as_ref().unwrap().over),
        ("l.tuned", Some("checkpoints"))
    );
    assert_eq!(
        merged.args["other"],
        Arg::MapVar,
        "loop variables stay local"
    );
    match &node(&p, "both").args["items"] {
        Arg::List(items) => {
            let refs: Vec<_> = items.iter().map(node_ref).collect();
            assert_eq!(refs, [("s.tuned", None), ("l.tuned", None)]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        node_ref(&node(&p, "both").args["extra"]),
        ("s.merged", None)
    );
}

#[test]
fn set_reaches_params_inside_an_instance() {
    let dir = project(&[("adapt.flow", STAGE)]);
    let main = "base = dir(\"b\")\ndata = gen(cmd: \"d\")\nimport \"adapt.flow\" as s\n";
    let p = load_in(dir.path(), main, &["s.lr=3e-4"]).unwrap();
    assert_eq!(p.params["s.lr"].value, Value::Float(3e-4));
    assert!(p.params["s.lr"].overridden);
    let err = match load_in(dir.path(), main, &["s=1"]) {
        Err(d) => squash(&d.render()),
        Ok(_) => panic!("`--set s=1` must fail"),
    };
    assert!(err.contains("unknown param `s`"), "{err}");
    assert!(
        err.contains("`s` is a module instance; set one of its params: `--set s.NAME=VALUE`"),
        "{err}"
    );
}

#[test]
fn a_binding_replaces_a_definition_of_the_module() {
    // The module fetches its own model; the importer brings another one.
    let module = "\
fetched = gen(cmd: \"fetch\")
model = train(base: dir(\"m\"), data: fetched)
report = collect(items: [model])
";
    let dir = project(&[("lib.flow", module)]);
    let main = "mine = gen(cmd: \"mine\")\nimport \"lib.flow\" as x with {model: mine}\n";
    let p = load_in(dir.path(), main, &[]).unwrap();
    assert!(
        !names(&p).contains(&"x.model"),
        "the bound node is not declared: {:?}",
        names(&p)
    );
    match &node(&p, "x.report").args["items"] {
        Arg::List(items) => assert_eq!(node_ref(&items[0]), ("mine", None)),
        other => panic!("{other:?}"),
    }
    // The node that only fed the replaced one is still there (run targets
    // leave it out: `flow run FILE x.report`).
    assert!(names(&p).contains(&"x.fetched"));
}

#[test]
fn instances_nest_and_their_members_are_reached_by_path() {
    let dir = project(&[
        (
            "inner.flow",
            "param k = 1\nleaf = gen(cmd: \"{k} {seed}\", n: k)\n",
        ),
        (
            "outer.flow",
            "import \"inner.flow\" as i with {k: 2}\nuse = count(input: i.leaf.nums)\n",
        ),
    ]);
    let main = "\
seed = gen(cmd: \"s\")
import \"outer.flow\" as o
top = count(input: o.i.leaf.nums, label: \"{o.i.k}\")
alias = o.use
";
    let p = load_in(dir.path(), main, &[]).unwrap();
    assert_eq!(names(&p), ["o.i.leaf", "o.use", "seed", "top"]);
    assert_eq!(p.params["o.i.k"].value, Value::Int(2));
    assert_eq!(
        node_ref(&node(&p, "o.use").args["input"]),
        ("o.i.leaf", Some("nums"))
    );
    assert_eq!(
        node_ref(&node(&p, "top").args["input"]),
        ("o.i.leaf", Some("nums"))
    );
    // `{seed}` in the inner module reaches the root through both instances.
    let leaf = node(&p, "o.i.leaf");
    let rendered = format!("{:?}", leaf.args["cmd"]);
    assert!(rendered.contains("node: \"seed\""), "{rendered}");
}

#[test]
fn plain_imports_inside_a_module_join_the_instance() {
    let dir = project(&[
        ("common.flow", "shared = gen(cmd: \"{base}\")\n"),
        (
            "mod.flow",
            "import \"common.flow\"\nuse = collect(items: [shared])\n",
        ),
    ]);
    let main = "base = gen(cmd: \"b\")\nimport \"mod.flow\" as a\nimport \"mod.flow\" as b\n";
    let p = load_in(dir.path(), main, &[]).unwrap();
    assert_eq!(
        names(&p),
        ["a.shared", "a.use", "b.shared", "b.use", "base"]
    );
}

#[test]
fn named_inputs_are_files_or_directories_relative_to_their_file() {
    let dir = project(&[(
        "lib/stage.flow",
        "bench = file(\"data/bench.jsonl\")\nscore = count(input: bench)\n",
    )]);
    let main = "\
weights = dir(\"models/base\")
import \"lib/stage.flow\"
tuned = train(base: weights, data: weights)
again = count(input: bench)
";
    let p = load_in(dir.path(), main, &[]).unwrap();
    assert_eq!(
        names(&p),
        ["score", "tuned", "again"],
        "an input is not a node"
    );
    match &node(&p, "again").args["input"] {
        Arg::Input { path, span, .. } => {
            assert_eq!(path, &dir.path().join("lib/data/bench.jsonl"));
            assert!(p.sources.files[span.file].path.ends_with("lib/stage.flow"));
        }
        other => panic!("{other:?}"),
    }
    match &node(&p, "tuned").args["base"] {
        Arg::Input { path, .. } => assert_eq!(path, &dir.path().join("models/base")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_named_input_of_the_wrong_kind_is_reported_at_its_use() {
    let dir = project(&[]);
    let err = errors_in(dir.path(), "w = dir(\"models\")\nc = count(input: w)\n");
    assert!(
        err.contains(
            "mistyped argument `input` of `count`: expected a file, got input `w` (a directory)"
        ),
        "{err}"
    );
    let err = errors_in(dir.path(), "w = file(\"x\")\nc = count(input: w.lines)\n");
    assert!(
        err.contains("`w` is an input; inputs have no fields"),
        "{err}"
    );
    let err = errors_in(dir.path(), "w = file(\"\")\n");
    assert!(err.contains("empty input path"), "{err}");
}

#[test]
fn a_binding_that_names_nothing_of_the_module_is_an_error() {
    let dir = project(&[("adapt.flow", STAGE)]);
    let err = errors_in(
        dir.path(),
        "small = dir(\"s\")\ndata = gen(cmd: \"d\")\nimport \"adapt.flow\" as s with {bsae: small, base: small}\n",
    );
    assert!(
        err.contains("adapt.flow neither defines nor uses `bsae`"),
        "{err}"
    );
    assert!(err.contains("did you mean `base`?"), "{err}");
}

#[test]
fn a_value_binds_only_a_param() {
    let dir = project(&[("adapt.flow", STAGE)]);
    let err = errors_in(
        dir.path(),
        "data = gen(cmd: \"d\")\nimport \"adapt.flow\" as s with {base: 3, tuned: 4}\n",
    );
    assert!(
        err.contains(
            "adapt.flow uses `base` but does not declare it as a param; bind it to a name"
        ),
        "{err}"
    );
    assert!(err.contains("`tuned` is a node of"), "{err}");
}

#[test]
fn an_instance_is_not_a_node() {
    let dir = project(&[("adapt.flow", STAGE)]);
    let main = "base = dir(\"b\")\ndata = gen(cmd: \"d\")\nimport \"adapt.flow\" as s\n";
    let err = errors_in(dir.path(), &format!("{main}c = collect(items: [s])\n"));
    assert!(
        err.contains("`s` is a module instance, not a node"),
        "{err}"
    );
    assert!(
        err.contains("name one of its nodes or params: `s.NAME`"),
        "{err}"
    );
    let err = errors_in(
        dir.path(),
        &format!("{main}c = collect(items: [s.tunde])\n"),
    );
    assert!(err.contains("undefined name `s.tunde`"), "{err}");
    assert!(err.contains("did you mean `s.tuned`?"), "{err}");
    let err = errors_in(dir.path(), &format!("{main}a = s\n"));
    assert!(
        err.contains("`a` is an alias of the module instance `s`"),
        "{err}"
    );
    let err = errors_in(dir.path(), &format!("{main}s = gen(cmd: \"x\")\n"));
    assert!(err.contains("duplicate name `s`"), "{err}");
}

#[test]
fn a_module_that_imports_itself_as_an_instance_is_a_cycle() {
    let dir = project(&[("a.flow", "import \"a.flow\" as again\n")]);
    let err = errors_in(dir.path(), "import \"a.flow\" as first\n");
    assert!(err.contains("import cycle: "), "{err}");
    assert!(
        err.contains("a.flow -> ") && err.matches("a.flow").count() >= 3,
        "{err}"
    );
}

#[test]
fn an_error_inside_a_module_imported_twice_is_reported_once() {
    let dir = project(&[("bad.flow", "x = count(input: nowhere)\n")]);
    let err = errors_in(
        dir.path(),
        "import \"bad.flow\" as a\nimport \"bad.flow\" as b\n",
    );
    assert_eq!(err.matches("undefined name `nowhere`").count(), 1, "{err}");
}

#[test]
fn modules_that_multiply_are_stopped_with_the_import_chain() {
    // 23 files each instantiating the next twice: 2^22 instances, which
    // never finished loading. Loading stops at 10,000 with an error.
    let mut files: Vec<(String, String)> = (0..22)
        .map(|i| {
            let next = i + 1;
            (
                format!("m{i}.flow"),
                format!("import \"m{next}.flow\" as a\nimport \"m{next}.flow\" as b\n"),
            )
        })
        .collect();
    files.push(("m22.flow".into(), "x = gen(cmd: \"x\")\n".into()));
    let borrowed: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let dir = project(&borrowed);
    let main = std::fs::read_to_string(dir.path().join("m0.flow")).unwrap();
    let err = lang_common::load_in(dir.path(), &main, &[]).unwrap_err();
    // Long lines wrap inside the temporary paths: compare without spaces.
    let r: String = squash(&err.render()).split_whitespace().collect();
    assert_eq!(err.len(), 1, "{r}");
    assert!(r.contains("morethan10000moduleinstances"), "{r}");
    assert!(r.contains("main.flow->"), "{r}");
    assert!(r.contains("m19.flow->"), "{r}");
    assert!(r.contains("m19.flow:1:8"), "{r}");
}
