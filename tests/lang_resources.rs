//! The reserved `resources:` argument: what a node asks of a scheduler.

mod lang_common;

use flow_engine::ir::{Node, NodeResources, Pipeline};
use flow_engine::lang::{parse_mem_mb, parse_time_min};
use lang_common::{errors, load, squash};

fn node<'a>(p: &'a Pipeline, name: &str) -> &'a Node {
    p.nodes.iter().find(|n| n.name == name).unwrap()
}

#[test]
fn every_field_in_every_spelling() {
    let p = load(
        r#"
param part = "gpu"
param cores = 16
a = gen(cmd: "x", resources: {cpus: 8, mem: "32G", gpus: 2, time: "1-02:03:04", partition: "long"})
b = gen(cmd: "x", resources: {mem: 2048, time: 90, shards: 4})
c = gen(cmd: "x", resources: {partition: part, cpus: cores, mem: "512M", time: "4:00:00"})
d = gen(cmd: "x")
m = [gen(cmd: "{v}", resources: {cpus: 2}) for v in [1, 2]]
"#,
        &[],
    )
    .unwrap();
    assert_eq!(
        node(&p, "a").resources,
        NodeResources {
            cpus: Some(8),
            mem_mb: Some(32 * 1024),
            gpus: Some(2),
            // 1 day, 2 h, 3 min, 4 s rounded up to a minute.
            time_min: Some(24 * 60 + 2 * 60 + 3 + 1),
            partition: Some("long".into()),
            shards: None,
        }
    );
    let b = &node(&p, "b").resources;
    assert_eq!((b.mem_mb, b.time_min, b.cpus), (Some(2048), Some(90), None));
    assert_eq!(b.shards, Some(4));
    let c = &node(&p, "c").resources;
    assert_eq!(c.partition.as_deref(), Some("gpu"));
    assert_eq!(
        (c.cpus, c.mem_mb, c.time_min),
        (Some(16), Some(512), Some(240))
    );
    assert_eq!(node(&p, "d").resources, NodeResources::default());
    assert_eq!(node(&p, "m").resources.cpus, Some(2));
}

#[test]
fn resources_are_not_arguments_and_so_never_in_a_key() {
    let with = load(r#"a = gen(cmd: "x", resources: {cpus: 4, mem: "1G"})"#, &[]).unwrap();
    let without = load(r#"a = gen(cmd: "x")"#, &[]).unwrap();
    assert_eq!(node(&with, "a").args, node(&without, "a").args);
}

#[test]
fn bad_resources_are_errors_with_the_fields_listed() {
    let e = squash(&errors(r#"a = gen(cmd: "x", resources: {cpu: 4})"#, &[]));
    assert!(e.contains("unknown resource `cpu`"), "{e}");
    assert!(e.contains("cpus (int)"), "{e}");
    let e = squash(&errors(
        r#"a = gen(cmd: "x", resources: {mem: "lots"})"#,
        &[],
    ));
    assert!(e.contains("bad value for resource `mem`"), "{e}");
    let e = squash(&errors(
        r#"a = gen(cmd: "x", resources: {time: "1:99:00"})"#,
        &[],
    ));
    assert!(e.contains("bad value for resource `time`"), "{e}");
    let e = squash(&errors(r#"a = gen(cmd: "x", resources: {cpus: 0})"#, &[]));
    assert!(e.contains("bad value for resource `cpus`"), "{e}");
    let e = squash(&errors(r#"a = gen(cmd: "x", resources: {shards: 0})"#, &[]));
    assert!(e.contains("bad value for resource `shards`"), "{e}");
    let e = squash(&errors(r#"a = gen(cmd: "x", resources: 4)"#, &[]));
    assert!(e.contains("`resources` must be a record"), "{e}");
}

/// The spellings of sbatch(1) `--time` ("minutes", "minutes:seconds",
/// "hours:minutes:seconds", "days-hours", "days-hours:minutes",
/// "days-hours:minutes:seconds") and `--mem` (K, M, G, T; default M).
#[test]
fn slurm_time_and_memory_spellings() {
    assert_eq!(parse_time_min("90"), Some(90));
    assert_eq!(parse_time_min("30:30"), Some(31));
    assert_eq!(parse_time_min("2:00:00"), Some(120));
    assert_eq!(parse_time_min("2-12"), Some(2 * 1440 + 12 * 60));
    assert_eq!(parse_time_min("1-00:30"), Some(1440 + 30));
    assert_eq!(parse_time_min("0-00:00:01"), Some(1));
    for bad in ["", "x", "1:2:3:4", "1:60:00", "1-24", "0"] {
        assert_eq!(parse_time_min(bad), None, "{bad:?}");
    }
    assert_eq!(parse_mem_mb("512"), Some(512));
    assert_eq!(parse_mem_mb("512M"), Some(512));
    assert_eq!(parse_mem_mb("16G"), Some(16384));
    assert_eq!(parse_mem_mb("16gb"), Some(16384));
    assert_eq!(parse_mem_mb("1.5G"), Some(1536));
    assert_eq!(parse_mem_mb("1T"), Some(1024 * 1024));
    assert_eq!(parse_mem_mb("2048K"), Some(2));
    for bad in ["", "G", "-1G", "lots"] {
        assert_eq!(parse_mem_mb(bad), None, "{bad:?}");
    }
}
