//! The engine core through its library API, on pipelines built by hand as
//! IR (independent of the language front end): keys, cache hits, early
//! cutoff, map nodes, failures, the run history, gc and verify.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use flow_engine::executor::{run, RunOptions, RunSummary};
use flow_engine::ir::{
    Arg, InputKind, MapOver, Node, ParamDef, Pipeline, Sources, Span, TemplatePart,
};
use flow_engine::op::Registry;
use flow_engine::op::{
    Op, OpContext, OpResult, OpSpec, Output, Outputs, Param, Resources, Type, Value,
};
use flow_engine::plan::plan;
use flow_engine::store::Store;

fn span() -> Span {
    Span {
        file: 0,
        span: (0, 0).into(),
    }
}

/// `write(text)`: writes `text` to out/file.txt; output `file` = that path.
struct Write;
impl Op for Write {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "write",
            version: 1,
            doc: "",
            params: vec![Param::required("text", Type::Str, "")],
            produces: Type::Dir,
            outputs: vec![Output {
                name: "file",
                ty: Type::File,
                doc: "",
            }],
            resources: Resources::ONE_THREAD,
        }
    }
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        #[derive(Deserialize)]
        struct P {
            text: String,
        }
        let P { text } = ctx.params()?;
        std::fs::write(ctx.out_dir.join("file.txt"), &text).map_err(|e| miette::miette!("{e}"))?;
        ctx.log(&format!("wrote {text}"));
        let mut o = Outputs::new();
        o.insert("file".into(), Value::Path(ctx.out_dir.join("file.txt")));
        Ok(o)
    }
}

/// `lower(src)`: lower-cases src/file.txt (so different inputs can give
/// identical outputs: early cutoff).
struct Lower;
impl Op for Lower {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "lower",
            version: 1,
            doc: "",
            params: vec![Param::required("src", Type::Dir, "")],
            produces: Type::Dir,
            outputs: vec![],
            resources: Resources::ONE_THREAD,
        }
    }
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        #[derive(Deserialize)]
        struct P {
            src: std::path::PathBuf,
        }
        let P { src } = ctx.params()?;
        let text =
            std::fs::read_to_string(src.join("file.txt")).map_err(|e| miette::miette!("{e}"))?;
        std::fs::write(ctx.out_dir.join("file.txt"), text.to_lowercase())
            .map_err(|e| miette::miette!("{e}"))?;
        Ok(Outputs::new())
    }
}

/// `cat(parts)`: concatenates file.txt of every input dir, or files.
struct Cat;
impl Op for Cat {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "cat",
            version: 1,
            doc: "",
            params: vec![Param::required(
                "parts",
                Type::List(Box::new(Type::Any)),
                "",
            )],
            produces: Type::Dir,
            outputs: vec![],
            resources: Resources::ONE_THREAD,
        }
    }
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        let mut all = String::new();
        #[derive(Deserialize)]
        struct P {
            parts: Vec<std::path::PathBuf>,
        }
        let P { parts } = ctx.params()?;
        for p in parts {
            let f = if p.is_dir() {
                p.join("file.txt")
            } else {
                p.clone()
            };
            all.push_str(&std::fs::read_to_string(f).map_err(|e| miette::miette!("{e}"))?);
        }
        std::fs::write(ctx.out_dir.join("file.txt"), all).map_err(|e| miette::miette!("{e}"))?;
        Ok(Outputs::new())
    }
}

/// `pair(first, second)`: writes first/file.txt and second/file.txt;
/// outputs `first` and `second` are those directories (as a train artifact's
/// checkpoints are).
struct Pair;
impl Op for Pair {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "pair",
            version: 1,
            doc: "",
            params: vec![
                Param::required("first", Type::Str, ""),
                Param::required("second", Type::Str, ""),
            ],
            produces: Type::Dir,
            outputs: vec![
                Output {
                    name: "first",
                    ty: Type::Dir,
                    doc: "",
                },
                Output {
                    name: "second",
                    ty: Type::Dir,
                    doc: "",
                },
            ],
            resources: Resources::ONE_THREAD,
        }
    }
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        #[derive(Deserialize)]
        struct P {
            first: String,
            second: String,
        }
        let P { first, second } = ctx.params()?;
        let mut o = Outputs::new();
        for (part, text) in [("first", first), ("second", second)] {
            let dir = ctx.out_dir.join(part);
            std::fs::create_dir_all(&dir).map_err(|e| miette::miette!("{e}"))?;
            std::fs::write(dir.join("file.txt"), text).map_err(|e| miette::miette!("{e}"))?;
            o.insert(part.into(), Value::Path(dir));
        }
        Ok(o)
    }
}

/// `fail()`: always fails.
struct Fail;
impl Op for Fail {
    fn spec(&self) -> OpSpec {
        OpSpec {
            name: "fail",
            version: 1,
            doc: "",
            params: vec![],
            produces: Type::Dir,
            outputs: vec![],
            resources: Resources::ONE_THREAD,
        }
    }
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        ctx.log("about to fail");
        Err(miette::miette!("deliberate failure"))
    }
}

/// `write` at version 2: same behaviour, a new implementation version.
struct WriteV2;
impl Op for WriteV2 {
    fn spec(&self) -> OpSpec {
        OpSpec {
            version: 2,
            ..Write.spec()
        }
    }
    fn run(&self, ctx: &OpContext) -> OpResult<Outputs> {
        Write.run(ctx)
    }
}

fn registry() -> Registry {
    let ops: Vec<Arc<dyn Op>> = vec![
        Arc::new(Write),
        Arc::new(Lower),
        Arc::new(Cat),
        Arc::new(Fail),
        Arc::new(Pair),
    ];
    Registry::from_ops(ops)
}

fn node(name: &str, op: &str, args: &[(&str, Arg)]) -> Node {
    Node {
        name: name.into(),
        span: span(),
        op: op.into(),
        args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        map: None,
        device: None,
        resources: Default::default(),
    }
}

fn lit(s: &str) -> Arg {
    Arg::Lit(Value::Str(s.into()))
}

fn param(name: &str, v: &str) -> Arg {
    Arg::Param {
        name: name.into(),
        value: Value::Str(v.into()),
    }
}

fn up(name: &str) -> Arg {
    Arg::Node {
        node: name.into(),
        field: None,
        span: span(),
    }
}

fn pipeline(dir: &Path, params: &[(&str, &str)], nodes: Vec<Node>) -> Pipeline {
    Pipeline {
        path: dir.join("p.flow"),
        sources: Sources::default(),
        params: params
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    ParamDef {
                        name: k.to_string(),
                        value: Value::Str(v.to_string()),
                        span: span(),
                        overridden: false,
                    },
                )
            })
            .collect(),
        nodes,
    }
}

fn go(p: &Pipeline, store: &Store) -> RunSummary {
    let opts = RunOptions {
        jobs: 2,
        cores: 2,
        ..RunOptions::default()
    };
    run(p, &registry(), store, &opts).expect("run")
}

fn ran(s: &RunSummary) -> Vec<String> {
    let mut v: Vec<String> = s
        .events
        .iter()
        .filter(|e| e.status == "ran")
        .map(|e| e.node.clone())
        .collect();
    v.sort();
    v
}

/// a = write(param x); b = lower(a); c = write("fixed"); d = cat([b, c]).
fn diamond(dir: &Path, x: &str) -> Pipeline {
    pipeline(
        dir,
        &[("x", x)],
        vec![
            node("a", "write", &[("text", param("x", x))]),
            node("b", "lower", &[("src", up("a"))]),
            node("c", "write", &[("text", lit("fixed"))]),
            node("d", "cat", &[("parts", Arg::List(vec![up("b"), up("c")]))]),
        ],
    )
}

#[test]
fn second_run_is_all_cached_and_a_param_change_reruns_only_downstream() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let s1 = go(&diamond(t.path(), "hello"), &store);
    assert_eq!((s1.ran, s1.cached, s1.failed, s1.skipped), (4, 0, 0, 0));
    let s2 = go(&diamond(t.path(), "hello"), &store);
    assert_eq!((s2.ran, s2.cached), (0, 4));
    let s3 = go(&diamond(t.path(), "world"), &store);
    assert_eq!(ran(&s3), vec!["a", "b", "d"]);
    assert_eq!(s3.status_of("c"), Some("cached"));
    // The final artifact holds what the ops computed.
    let d_key = s3
        .events
        .iter()
        .find(|e| e.node == "d")
        .unwrap()
        .key
        .clone()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(store.out_dir(&d_key).join("file.txt")).unwrap(),
        "worldfixed"
    );
}

#[test]
fn early_cutoff_keeps_dependents_cached_when_output_is_identical() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    go(&diamond(t.path(), "Hello"), &store);
    // `a` changes, `b` = lower(a) reruns but produces the same bytes: `d` stays cached.
    let s = go(&diamond(t.path(), "HELLO"), &store);
    assert_eq!(ran(&s), vec!["a", "b"]);
    assert_eq!(s.status_of("d"), Some("cached"));
}

/// p = pair(first, second); l = lower(p.first).
fn pair_then_lower(dir: &Path, first: &str, second: &str) -> Pipeline {
    pipeline(
        dir,
        &[],
        vec![
            node(
                "p",
                "pair",
                &[("first", lit(first)), ("second", lit(second))],
            ),
            node(
                "l",
                "lower",
                &[(
                    "src",
                    Arg::Node {
                        node: "p".into(),
                        field: Some("first".into()),
                        span: span(),
                    },
                )],
            ),
        ],
    )
}

#[test]
fn a_dependent_of_a_path_output_is_keyed_by_that_path_alone() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    go(&pair_then_lower(t.path(), "One", "two"), &store);
    // Only `second` changes: `p` reruns, `l` reads `p.first`, whose bytes
    // are the same, and stays cached.
    let s = go(&pair_then_lower(t.path(), "One", "three"), &store);
    assert_eq!(ran(&s), vec!["p"]);
    assert_eq!(s.status_of("l"), Some("cached"));
    // `first` changes: `l` reruns.
    let s = go(&pair_then_lower(t.path(), "Uno", "three"), &store);
    assert_eq!(ran(&s), vec!["l", "p"]);
}

#[test]
fn plan_says_why() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let never = plan(&diamond(t.path(), "x"), &registry(), &store).unwrap();
    assert!(never.iter().all(|e| e.status == "run"));
    assert_eq!(
        never.iter().find(|e| e.node == "a").unwrap().why,
        vec!["never run"]
    );
    assert_eq!(
        never.iter().find(|e| e.node == "d").unwrap().why,
        vec!["upstream b will run", "upstream c will run"]
    );
    go(&diamond(t.path(), "x"), &store);
    let same = plan(&diamond(t.path(), "x"), &registry(), &store).unwrap();
    assert!(same.iter().all(|e| e.status == "cached"), "{same:?}");
    let changed = plan(&diamond(t.path(), "y"), &registry(), &store).unwrap();
    let a = changed.iter().find(|e| e.node == "a").unwrap();
    assert_eq!(a.status, "run");
    assert_eq!(a.why.len(), 1);
    assert!(
        a.why[0].contains("param `x` changed") && a.why[0].contains("\"x\" → \"y\""),
        "{:?}",
        a.why
    );
    assert_eq!(
        changed.iter().find(|e| e.node == "c").unwrap().status,
        "cached"
    );
    assert_eq!(
        changed.iter().find(|e| e.node == "b").unwrap().why,
        vec!["upstream a will run"]
    );
}

#[test]
fn a_failed_node_skips_its_dependents_and_the_rest_finishes() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let p = pipeline(
        t.path(),
        &[],
        vec![
            node("bad", "fail", &[]),
            node("after", "lower", &[("src", up("bad"))]),
            node("last", "cat", &[("parts", Arg::List(vec![up("after")]))]),
            node("good", "write", &[("text", lit("ok"))]),
            node("good2", "lower", &[("src", up("good"))]),
        ],
    );
    let s = go(&p, &store);
    assert_eq!((s.ran, s.failed, s.skipped), (2, 1, 2));
    assert_eq!(s.status_of("after"), Some("skipped"));
    assert_eq!(s.status_of("last"), Some("skipped"));
    assert_eq!(s.status_of("good2"), Some("ran"));
    // The failed node's log is kept; the finished ones are cached next time.
    let key = s
        .events
        .iter()
        .find(|e| e.node == "bad")
        .unwrap()
        .key
        .clone()
        .unwrap();
    let log = std::fs::read_to_string(store.failed_log(&key)).unwrap();
    assert!(
        log.contains("about to fail") && log.contains("deliberate failure"),
        "{log}"
    );
    let s2 = go(&p, &store);
    assert_eq!((s2.cached, s2.failed, s2.skipped), (2, 1, 2));
    assert!(
        store.root.join("tmp").read_dir().unwrap().next().is_none(),
        "tmp is left clean"
    );
}

#[test]
fn map_elements_are_separate_nodes() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let over = |xs: &[&str]| Arg::Param {
        name: "xs".into(),
        value: Value::List(xs.iter().map(|x| Value::Str(x.to_string())).collect()),
    };
    let mk = |xs: &[&str]| {
        let mut m = node("m", "write", &[("text", Arg::MapVar)]);
        m.map = Some(MapOver {
            var: "x".into(),
            over: over(xs),
        });
        pipeline(
            t.path(),
            &[],
            vec![m, node("all", "cat", &[("parts", up("m"))])],
        )
    };
    let s1 = go(&mk(&["a", "b"]), &store);
    assert_eq!(ran(&s1), vec!["all", "m[0]", "m[1]"]);
    // A new element runs alone (the others keep their keys: the index is not in them).
    let s2 = go(&mk(&["c", "a", "b"]), &store);
    assert_eq!(ran(&s2), vec!["all", "m[0]"]);
    assert_eq!(s2.status_of("m[1]"), Some("cached"));
    let key = s2
        .events
        .iter()
        .find(|e| e.node == "all")
        .unwrap()
        .key
        .clone()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(store.out_dir(&key).join("file.txt")).unwrap(),
        "cab"
    );
}

#[test]
fn map_over_an_upstream_output_list() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    // `parts` = a map node; `lowered` maps over its artifact list.
    let mut parts = node("parts", "write", &[("text", Arg::MapVar)]);
    parts.map = Some(MapOver {
        var: "x".into(),
        over: Arg::Lit(Value::List(vec![
            Value::Str("A".into()),
            Value::Str("B".into()),
        ])),
    });
    let mut lowered = node("lowered", "lower", &[("src", Arg::MapVar)]);
    lowered.map = Some(MapOver {
        var: "p".into(),
        over: up("parts"),
    });
    let p = pipeline(
        t.path(),
        &[],
        vec![
            parts,
            lowered,
            node("all", "cat", &[("parts", up("lowered"))]),
        ],
    );
    let s = go(&p, &store);
    assert_eq!(
        ran(&s),
        vec!["all", "lowered[0]", "lowered[1]", "parts[0]", "parts[1]"]
    );
    let key = s
        .events
        .iter()
        .find(|e| e.node == "all")
        .unwrap()
        .key
        .clone()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(store.out_dir(&key).join("file.txt")).unwrap(),
        "ab"
    );
}

#[test]
fn node_fields_and_templates_resolve_to_artifact_paths() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let p = pipeline(
        t.path(),
        &[],
        vec![
            node("a", "write", &[("text", lit("content"))]),
            node(
                "b",
                "write",
                &[(
                    "text",
                    Arg::Template(vec![
                        TemplatePart::Text("from ".into()),
                        TemplatePart::Arg(Arg::Node {
                            node: "a".into(),
                            field: Some("file".into()),
                            span: span(),
                        }),
                    ]),
                )],
            ),
            node(
                "c",
                "cat",
                &[(
                    "parts",
                    Arg::List(vec![Arg::Node {
                        node: "a".into(),
                        field: Some("file".into()),
                        span: span(),
                    }]),
                )],
            ),
        ],
    );
    let s = go(&p, &store);
    assert_eq!(s.ran, 3);
    let a = s
        .events
        .iter()
        .find(|e| e.node == "a")
        .unwrap()
        .key
        .clone()
        .unwrap();
    let b = s
        .events
        .iter()
        .find(|e| e.node == "b")
        .unwrap()
        .key
        .clone()
        .unwrap();
    let c = s
        .events
        .iter()
        .find(|e| e.node == "c")
        .unwrap()
        .key
        .clone()
        .unwrap();
    let expect = format!("from {}", store.out_dir(&a).join("file.txt").display());
    assert_eq!(
        std::fs::read_to_string(store.out_dir(&b).join("file.txt")).unwrap(),
        expect
    );
    assert_eq!(
        std::fs::read_to_string(store.out_dir(&c).join("file.txt")).unwrap(),
        "content"
    );
    // A moved cache keeps every key: no cache path is part of a key.
    let moved = t.path().join("moved");
    std::fs::rename(&store.root, &moved).unwrap();
    let s2 = go(&p, &Store::open(&moved).unwrap());
    // `b`'s template text contains the artifact path, but its key does not.
    assert_eq!((s2.ran, s2.cached), (0, 3));
}

#[test]
fn file_inputs_are_hashed_by_content() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let input = t.path().join("in.txt");
    std::fs::write(&input, "one").unwrap();
    let p = pipeline(
        t.path(),
        &[],
        vec![node(
            "c",
            "cat",
            &[(
                "parts",
                Arg::List(vec![Arg::Input {
                    kind: InputKind::File,
                    path: input.clone(),
                    span: span(),
                }]),
            )],
        )],
    );
    assert_eq!(go(&p, &store).ran, 1);
    assert_eq!(go(&p, &store).cached, 1);
    std::fs::write(&input, "two").unwrap();
    let s = go(&p, &store);
    assert_eq!(s.ran, 1);
    let why = plan(&p, &registry(), &store).unwrap();
    assert_eq!(why[0].status, "cached");
    std::fs::write(&input, "three").unwrap();
    let why = plan(&p, &registry(), &store).unwrap();
    assert!(
        why[0].why[0].starts_with("input changed"),
        "{:?}",
        why[0].why
    );
    std::fs::remove_file(&input).unwrap();
    let s = go(&p, &store);
    assert_eq!(s.failed, 1, "a missing input fails its node");
}

#[test]
fn gc_keeps_the_last_runs_and_verify_finds_damage() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    let s1 = go(&diamond(t.path(), "one"), &store);
    let s2 = go(&diamond(t.path(), "two"), &store);
    let keys =
        |s: &RunSummary| -> Vec<String> { s.events.iter().filter_map(|e| e.key.clone()).collect() };
    let old_only: Vec<String> = keys(&s1)
        .into_iter()
        .filter(|k| !keys(&s2).contains(k))
        .collect();
    assert_eq!(old_only.len(), 3, "a, b and d changed");
    assert_eq!(store.artifact_keys().len(), 7);
    let r = store.gc(1).unwrap();
    assert_eq!((r.removed, r.kept), (3, 4));
    for k in keys(&s2) {
        assert!(store.lookup(&k).is_some());
    }
    for k in &old_only {
        assert!(store.lookup(k).is_none());
    }
    assert!(store.verify().is_empty());
    // Damage one artifact, delete another: both are reported.
    let victim = keys(&s2)[0].clone();
    std::fs::write(store.out_dir(&victim).join("file.txt"), "tampered").unwrap();
    let gone = keys(&s2)[1].clone();
    std::fs::remove_dir_all(store.artifact_dir(&gone)).unwrap();
    let problems = store.verify();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.contains(&victim) && p.contains("does not match")));
    assert!(problems
        .iter()
        .any(|p| p.contains(&gone) && p.contains("missing")));
}

#[test]
fn an_op_version_bump_reruns_the_op_and_plan_says_so() {
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join(".flow")).unwrap();
    go(&diamond(t.path(), "v"), &store);
    let ops: Vec<Arc<dyn Op>> = vec![
        Arc::new(WriteV2),
        Arc::new(Lower),
        Arc::new(Cat),
        Arc::new(Fail),
    ];
    let v2 = Registry::from_ops(ops);
    let entries = plan(&diamond(t.path(), "v"), &v2, &store).unwrap();
    let a = entries.iter().find(|e| e.node == "a").unwrap();
    assert_eq!(a.why, vec!["op `write` version changed: 1 → 2"]);
    let opts = RunOptions {
        jobs: 2,
        cores: 2,
        ..RunOptions::default()
    };
    let s = run(&diamond(t.path(), "v"), &v2, &store, &opts).unwrap();
    // a and c are `write` and rerun; their bytes are the same as before, so
    // b and d keep their keys (early cutoff).
    assert_eq!(ran(&s), vec!["a", "c"]);
    assert_eq!(s.status_of("b"), Some("cached"));
    assert_eq!(s.status_of("d"), Some("cached"));
}
