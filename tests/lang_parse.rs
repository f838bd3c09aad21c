//! Every language form, parsed and checked into the expected IR.

mod lang_common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use flow_engine::ir::{Arg, DeviceRequest, InputKind, Node, TemplatePart};
use flow_engine::op::Value;
use lang_common::{load, load_in, registry};

fn node<'a>(p: &'a flow_engine::ir::Pipeline, name: &str) -> &'a Node {
    p.nodes
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn text(s: &str) -> TemplatePart {
    TemplatePart::Text(s.to_string())
}

fn node_ref(name: &str, field: Option<&str>) -> (String, Option<String>) {
    (name.to_string(), field.map(str::to_string))
}

/// The node a reference points at, ignoring its span.
fn as_node(arg: &Arg) -> (String, Option<String>) {
    match arg {
        Arg::Node { node, field, .. } => (node.clone(), field.clone()),
        other => panic!("expected a node reference, got {other:?}"),
    }
}

#[test]
fn params_take_every_literal_form() {
    let p = load(
        r#"
param lr = 2e-5
param big = 1_000
param neg = -3
param half = 0.5
param negf = -1.5E+2
param name = "a\"b\t\u{41}\\"
param on = true
param off = false
param xs = [1, 2, 3]
param empty = []
param rec = {a: 1, b: "x", c: [true]}
"#,
        &[],
    )
    .unwrap();
    let v = |n: &str| p.params[n].value.clone();
    assert_eq!(v("lr"), Value::Float(2e-5));
    assert_eq!(v("big"), Value::Int(1000));
    assert_eq!(v("neg"), Value::Int(-3));
    assert_eq!(v("half"), Value::Float(0.5));
    assert_eq!(v("negf"), Value::Float(-150.0));
    assert_eq!(v("name"), Value::Str("a\"b\tA\\".into()));
    assert_eq!(v("on"), Value::Bool(true));
    assert_eq!(v("off"), Value::Bool(false));
    assert_eq!(
        v("xs"),
        Value::List(vec![Value::Int(1), Value::Int(2), Value::Int(3)])
    );
    assert_eq!(v("empty"), Value::List(vec![]));
    let mut rec = BTreeMap::new();
    rec.insert("a".to_string(), Value::Int(1));
    rec.insert("b".to_string(), Value::Str("x".into()));
    rec.insert("c".to_string(), Value::List(vec![Value::Bool(true)]));
    assert_eq!(v("rec"), Value::Record(rec));
    assert!(p.params.values().all(|d| !d.overridden));
    assert_eq!(p.params.len(), 11);
    assert!(p.nodes.is_empty());
}

#[test]
fn template_splits_into_parts_and_fills_defaults() {
    let p = load(
        "param n = 7\na = gen(cmd: \"seq {n} > {out}/nums\")\nb = gen(cmd: \"wc -l < {a}/nums > {out}/count; cat { a.nums } {{x}} }}\", n: 3)\n",
        &[],
    )
    .unwrap();
    let a = node(&p, "a");
    assert_eq!(a.op, "gen");
    assert_eq!(
        a.args["cmd"],
        Arg::Template(vec![
            text("seq "),
            TemplatePart::Arg(Arg::Param {
                name: "n".into(),
                value: Value::Int(7)
            }),
            text(" > "),
            TemplatePart::Out,
            text("/nums"),
        ])
    );
    assert_eq!(
        a.args["n"],
        Arg::Lit(Value::Int(1)),
        "the default fills a missing optional argument"
    );
    assert_eq!(a.map, None);
    assert_eq!(a.device, None);
    let b = node(&p, "b");
    let Arg::Template(parts) = &b.args["cmd"] else {
        panic!("cmd is not a template: {:?}", b.args["cmd"])
    };
    assert_eq!(parts.len(), 7, "{parts:?}");
    assert_eq!(parts[0], text("wc -l < "));
    let TemplatePart::Arg(a_ref) = &parts[1] else {
        panic!()
    };
    assert_eq!(as_node(a_ref), node_ref("a", None));
    assert_eq!(parts[2], text("/nums > "));
    assert_eq!(parts[3], TemplatePart::Out);
    assert_eq!(parts[4], text("/count; cat "));
    let TemplatePart::Arg(field_ref) = &parts[5] else {
        panic!()
    };
    assert_eq!(as_node(field_ref), node_ref("a", Some("nums")));
    assert_eq!(parts[6], text(" {x} }"));
    assert_eq!(b.args["n"], Arg::Lit(Value::Int(3)));
}

#[test]
fn node_references_inputs_and_widening() {
    let p = load(
        r#"
a = gen(cmd: "x")
t = train(base: dir("models/base"), data: a, lr: 1, mode: "lora")
c = count(input: file("../data/x.txt"), label: "n")
d = count(input: a.nums)
"#,
        &[],
    )
    .unwrap();
    let t = node(&p, "t");
    assert_eq!(t.op, "train");
    match &t.args["base"] {
        Arg::Input { kind, path, .. } => {
            assert_eq!(*kind, InputKind::Dir);
            assert_eq!(path, &PathBuf::from("/flow-lang-test/models/base"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(as_node(&t.args["data"]), node_ref("a", None));
    assert_eq!(
        t.args["lr"],
        Arg::Lit(Value::Float(1.0)),
        "an int literal widens to float"
    );
    assert_eq!(t.args["epochs"], Arg::Lit(Value::Int(1)));
    assert_eq!(t.args["mode"], Arg::Lit(Value::Str("lora".into())));
    match &node(&p, "c").args["input"] {
        Arg::Input { kind, path, .. } => {
            assert_eq!(*kind, InputKind::File);
            assert_eq!(
                path,
                &PathBuf::from("/data/x.txt"),
                "`..` resolves against the file's directory"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        as_node(&node(&p, "d").args["input"]),
        node_ref("a", Some("nums"))
    );
    let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "t", "c", "d"], "nodes keep source order");
}

#[test]
fn forward_references_are_allowed() {
    let p = load("b = count(input: a.nums)\na = gen(cmd: \"x\")\n", &[]).unwrap();
    assert_eq!(
        as_node(&node(&p, "b").args["input"]),
        node_ref("a", Some("nums"))
    );
}

#[test]
fn map_over_node_field_list_param_literal_and_map_node() {
    let p = load(
        r#"
param ts = [0.1, 0.2]
a = gen(cmd: "x")
base = train(base: dir("m"), data: a)
merged = [slerp(base: base, other: c, t: 0.5) for c in base.checkpoints]
again = [slerp(base: base, other: m, t: [0.5, 1]) for m in merged]
by_t = [slerp(base: base, other: base, t: x) for x in ts]
lit = [gen(cmd: "echo {v} > {out}/f", n: v) for v in [1, 2, 3]]
logs = [count(input: l) for l in merged_t.log]
merged_t = [train(base: m, data: a) for m in merged]
all_logs = collect(items: [a], extra: merged_t.log)
"#,
        &[],
    )
    .unwrap();
    let merged = node(&p, "merged");
    let map = merged.map.as_ref().expect("merged is a map");
    assert_eq!(map.var, "c");
    assert_eq!(as_node(&map.over), node_ref("base", Some("checkpoints")));
    assert_eq!(merged.args["other"], Arg::MapVar);
    assert_eq!(as_node(&merged.args["base"]), node_ref("base", None));
    assert_eq!(merged.args["t"], Arg::Lit(Value::Float(0.5)));

    let again = node(&p, "again");
    assert_eq!(
        as_node(&again.map.as_ref().unwrap().over),
        node_ref("merged", None)
    );
    assert_eq!(again.args["other"], Arg::MapVar);
    assert_eq!(
        again.args["t"],
        Arg::Lit(Value::List(vec![Value::Float(0.5), Value::Float(1.0)]))
    );

    let by_t = node(&p, "by_t");
    assert_eq!(
        by_t.map.as_ref().unwrap().over,
        Arg::Param {
            name: "ts".into(),
            value: Value::List(vec![Value::Float(0.1), Value::Float(0.2)])
        }
    );
    assert_eq!(by_t.args["t"], Arg::MapVar);

    let logs = node(&p, "logs");
    assert_eq!(
        as_node(&logs.map.as_ref().unwrap().over),
        node_ref("merged_t", Some("log"))
    );
    assert_eq!(
        as_node(&node(&p, "all_logs").args["extra"]),
        node_ref("merged_t", Some("log"))
    );

    let lit = node(&p, "lit");
    let map = lit.map.as_ref().unwrap();
    assert_eq!(
        map.over,
        Arg::Lit(Value::List(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Int(3)
        ]))
    );
    assert_eq!(lit.args["n"], Arg::MapVar);
    assert_eq!(
        lit.args["cmd"],
        Arg::Template(vec![
            text("echo "),
            TemplatePart::Arg(Arg::MapVar),
            text(" > "),
            TemplatePart::Out,
            text("/f")
        ])
    );
}

#[test]
fn lists_records_and_mixed_arguments() {
    let p = load(
        r#"
param who = "me"
a = gen(cmd: "x")
c = collect(
    items: [a, dir("d")],  # a node and an input
    meta: {k: 1, who: who},
    tags: ["x", "y"],
    flag: true,
    extra: {nested: [1, 2.5]},
)
"#,
        &[],
    )
    .unwrap();
    let c = node(&p, "c");
    let Arg::List(items) = &c.args["items"] else {
        panic!("{:?}", c.args["items"])
    };
    assert_eq!(items.len(), 2);
    assert_eq!(as_node(&items[0]), node_ref("a", None));
    assert!(
        matches!(&items[1], Arg::Input { kind: InputKind::Dir, path, .. } if path == &PathBuf::from("/flow-lang-test/d"))
    );
    let Arg::Record(meta) = &c.args["meta"] else {
        panic!("{:?}", c.args["meta"])
    };
    assert_eq!(meta["k"], Arg::Lit(Value::Int(1)));
    assert_eq!(
        meta["who"],
        Arg::Param {
            name: "who".into(),
            value: Value::Str("me".into())
        }
    );
    assert_eq!(
        c.args["tags"],
        Arg::Lit(Value::List(vec![
            Value::Str("x".into()),
            Value::Str("y".into())
        ]))
    );
    assert_eq!(c.args["flag"], Arg::Lit(Value::Bool(true)));
    let mut nested = BTreeMap::new();
    nested.insert(
        "nested".to_string(),
        Value::List(vec![Value::Int(1), Value::Float(2.5)]),
    );
    assert_eq!(c.args["extra"], Arg::Lit(Value::Record(nested)));
}

#[test]
fn device_argument_goes_to_the_node() {
    let p = load(
        r#"
param dev = "cuda:1"
a = gen(cmd: "x", device: "cpu")
b = gen(cmd: "x", device: "cuda")
c = gen(cmd: "x", device: "cuda:2")
d = gen(cmd: "x", device: "auto")
e = gen(cmd: "x", device: dev)
f = gen(cmd: "x")
m = [gen(cmd: "{v}", device: "cuda:0") for v in [1]]
"#,
        &[],
    )
    .unwrap();
    assert_eq!(node(&p, "a").device, Some(DeviceRequest::Cpu));
    assert_eq!(node(&p, "b").device, Some(DeviceRequest::Cuda(None)));
    assert_eq!(node(&p, "c").device, Some(DeviceRequest::Cuda(Some(2))));
    assert_eq!(node(&p, "d").device, Some(DeviceRequest::Auto));
    assert_eq!(node(&p, "e").device, Some(DeviceRequest::Cuda(Some(1))));
    assert_eq!(node(&p, "f").device, None);
    assert_eq!(node(&p, "m").device, Some(DeviceRequest::Cuda(Some(0))));
    assert!(
        !node(&p, "a").args.contains_key("device"),
        "device is not an op parameter"
    );
}

#[test]
fn set_overrides_params() {
    let text = "param lr = 2e-5\nparam n = 3\nparam name = \"a\"\nparam xs = [1]\nparam on = false\nt = gen(cmd: \"{name} {n}\", n: n)\n";
    let p = load(
        text,
        &["lr=1e-4", "n=5", "name=hello", "xs=[4, 5]", "on=true"],
    )
    .unwrap();
    assert_eq!(p.params["lr"].value, Value::Float(1e-4));
    assert_eq!(p.params["n"].value, Value::Int(5));
    assert_eq!(
        p.params["name"].value,
        Value::Str("hello".into()),
        "a bare word is a string"
    );
    assert_eq!(
        p.params["xs"].value,
        Value::List(vec![Value::Int(4), Value::Int(5)])
    );
    assert_eq!(p.params["on"].value, Value::Bool(true));
    assert!(p.params.values().all(|d| d.overridden));
    assert_eq!(
        node(&p, "t").args["n"],
        Arg::Param {
            name: "n".into(),
            value: Value::Int(5)
        }
    );
    // An int widens to a float param; a quoted string stays a string.
    let p = load(text, &["lr=1", "name=\"two words\""]).unwrap();
    assert_eq!(p.params["lr"].value, Value::Float(1.0));
    assert_eq!(p.params["name"].value, Value::Str("two words".into()));
    assert!(!p.params["n"].overridden);
}

#[test]
fn imports_join_one_namespace_relative_to_the_importing_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("lib/sub")).unwrap();
    std::fs::write(
        dir.path().join("lib/common.flow"),
        "import \"sub/deep.flow\"\nparam n = 2\nshared = gen(cmd: \"seq {n} {deep}\", n: n)\nc = count(input: file(\"data.txt\"))\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lib/sub/deep.flow"),
        "deep = gen(cmd: \"x\")\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("other.flow"),
        "import \"lib/sub/deep.flow\"\n",
    )
    .unwrap();
    let p = load_in(
        dir.path(),
        "import \"lib/common.flow\"\nimport \"other.flow\"\nmain = count(input: shared.nums, label: \"{n}\")\n",
        &["n=4"],
    )
    .unwrap();
    let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        ["deep", "shared", "c", "main"],
        "imports come first, each file once"
    );
    assert_eq!(p.sources.files.len(), 4, "main, common, deep, other");
    assert_eq!(
        p.params["n"].value,
        Value::Int(4),
        "--set reaches params of imported files"
    );
    match &node(&p, "c").args["input"] {
        Arg::Input { path, span, .. } => {
            assert_eq!(path, &dir.path().join("lib/data.txt"));
            assert!(p.sources.files[span.file].path.ends_with("lib/common.flow"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(p.path, dir.path().join("main.flow"));
    // The main file's nodes point into the main file.
    assert_eq!(node(&p, "main").span.file, 0);
}

#[test]
fn comments_newlines_and_trailing_commas() {
    let p = load(
        "# header\n\n\nparam n = 1 # trailing\na = gen(\n  # inside\n  cmd: \"x\",\n\n  n: [\n    1,\n  ][0:0] \n)\n",
        &[],
    );
    // The slice syntax above is not part of the language: the parser must reject it.
    assert!(p.is_err());
    let p = load(
        "# header\n\n\nparam n = 1 # trailing\na = gen(\n  # inside\n  cmd: \"x\",\n\n  n: n,\n)\nb = collect(items: [\n  a,\n  a,\n], tags: [],)\n",
        &[],
    )
    .unwrap();
    assert_eq!(p.nodes.len(), 2);
    assert_eq!(
        node(&p, "a").args["n"],
        Arg::Param {
            name: "n".into(),
            value: Value::Int(1)
        }
    );
    assert_eq!(node(&p, "b").args["tags"], Arg::Lit(Value::List(vec![])));
}

#[test]
fn windows_line_endings_parse() {
    let p = load("param n = 1\r\na = gen(cmd: \"x\", n: n)\r\n", &[]).unwrap();
    assert_eq!(p.nodes.len(), 1);
}

#[test]
fn exec_from_the_standard_library() {
    // The real `exec` op takes a template `cmd`.
    let std = flow_stdlib::registry();
    assert!(
        std.get("exec").is_some(),
        "the standard library has no `exec` op"
    );
    let p = flow_engine::lang::load_str(
        std::path::Path::new("/x/main.flow"),
        "a = exec(cmd: \"seq 3 > {out}/nums\")\nb = exec(cmd: \"wc -l < {a}/nums > {out}/count\")\n",
        &[],
        &std,
    )
    .unwrap();
    assert_eq!(p.nodes.len(), 2);
    assert!(matches!(p.nodes[1].args["cmd"], Arg::Template(_)));
    let _ = registry();
}

#[test]
fn aliases_stand_for_their_node() {
    let p = load(
        "a = gen(cmd: \"x\")\nsame = a\nfirst = same\nnums = a.nums\nb = count(input: nums)\nc = collect(items: [first])\nd = gen(cmd: \"{first}\")\n",
        &[],
    )
    .unwrap();
    let names: Vec<&str> = p.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"], "aliases are not nodes");
    assert_eq!(
        as_node(&node(&p, "b").args["input"]),
        node_ref("a", Some("nums"))
    );
    let Arg::Template(parts) = &node(&p, "d").args["cmd"] else {
        panic!()
    };
    assert_eq!(
        as_node(match &parts[0] {
            TemplatePart::Arg(a) => a,
            other => panic!("{other:?}"),
        }),
        node_ref("a", None)
    );
    let Arg::List(items) = &node(&p, "c").args["items"] else {
        panic!()
    };
    assert_eq!(as_node(&items[0]), node_ref("a", None));
}
