//! `pipelines/definemed.flow` and `pipelines/training-dynamics.flow` end to
//! end, tiny. `definemed.flow`: the shipped pipeline is
//! imported as a module instance whose source model is a tiny random Qwen2
//! (tests/golden/qwen2) and whose params are shrunk, then run through every
//! op on the CPU, the demo data and benchmarks included. The annotator is
//! an OpenAI-compatible endpoint on loopback (as vLLM would serve Mixtral)
//! that labels by medical keywords, since a random model would give every
//! document the same label; everything else runs on the tiny model. The
//! report's numbers are read back and checked for sanity; a second run is a
//! no-op; `--set demo.lr=...` plans training and what follows it, not
//! curation. `training-dynamics.flow`: two tiny models as two sizes share
//! one curation and each get their own training, merges and evaluation.

mod cli_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cli_common::definemed::{keyword_annotator, pipeline, tiny_model, TARGETS, TINY_PARAMS};
use cli_common::{assert_same_units, text, Project};
use flow_stdlib::artifacts::train::LossLine;
use flow_stdlib::artifacts::JsonLines;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `out/` directory of a node's artifact.
fn artifact(p: &Project, node: &str) -> PathBuf {
    let out = p.flow(&["show", "p.flow", node, "--path"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "flow show {node}: {stderr}");
    PathBuf::from(stdout.trim())
}

/// A project holding its own copy of the shipped pipelines and demo data
/// and the tiny model, importing `pipelines/definemed.flow` by a relative
/// path: nothing it reads lies outside its directory.
fn self_contained_project(annotator_url: &str) -> Project {
    let p = Project::new("");
    write_self_contained_project(p.path(), annotator_url);
    p
}

/// Writes the self-contained tiny project (`p.flow`, `pipelines/`,
/// `data/demo/`, `tiny/`) into `dir`.
fn write_self_contained_project(dir: &Path, annotator_url: &str) {
    let text = pipeline(annotator_url).replace(&format!("{ROOT}/pipelines/"), "pipelines/");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("p.flow"), text).unwrap();
    for sub in ["pipelines", "data/demo"] {
        for e in walkdir::WalkDir::new(Path::new(ROOT).join(sub)) {
            let e = e.unwrap();
            let to = dir.join(e.path().strip_prefix(ROOT).unwrap());
            if e.file_type().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
    }
    tiny_model("qwen2", &dir.join("tiny"));
}

/// Not a check: writes the tiny project for the device check
/// (`scripts/gpu_check.sh`, which runs it with `--device cuda` and
/// `--device cpu` beside a keyword annotator on `FLOW_TINY_ANNOTATOR`,
/// default `http://127.0.0.1:18080/v1`) into `FLOW_TINY_PROJECT`.
#[test]
#[ignore = "run by hand: FLOW_TINY_PROJECT=DIR cargo test --test e2e_definemed -- --ignored tiny_project"]
fn write_the_tiny_project_for_the_device_check() {
    let dir = std::env::var("FLOW_TINY_PROJECT").expect("FLOW_TINY_PROJECT names the directory");
    let url = std::env::var("FLOW_TINY_ANNOTATOR")
        .unwrap_or_else(|_| "http://127.0.0.1:18080/v1".to_owned());
    write_self_contained_project(Path::new(&dir), &url);
}

/// Every file of every artifact in `cache` (run facts left out: they are
/// not part of an artifact's content) that holds the bytes of `place`.
fn artifact_files_naming(cache: &Path, place: &Path) -> Vec<PathBuf> {
    let needle = place.to_string_lossy().into_owned().into_bytes();
    walkdir::WalkDir::new(cache.join("artifacts"))
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|f| {
            let inside = f.components().any(|c| c.as_os_str() == "out");
            let fact = f.components().any(|c| c.as_os_str() == "run-facts");
            inside && !fact
        })
        .filter(|f| {
            let bytes = std::fs::read(f).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_slice())
        })
        .collect()
}

/// Issue 16: a cache can move and a unit keeps its key whatever machine or
/// directory builds it. Two copies of the project in two places, one with
/// its cache inside, one with its cache elsewhere (as a Slurm scratch or a
/// moved cache would be): every unit has one key and one artifact, byte
/// for byte, and no artifact names the place of its project or its cache,
/// since results name their inputs by identity.
#[test]
fn the_pipeline_built_in_two_places_gives_every_unit_one_key_and_one_artifact() {
    let (_annotator, url) = keyword_annotator();
    let a = self_contained_project(&url);
    let b = self_contained_project(&url);
    let a_run = a.run(&TARGETS, 0);
    let b_cache = b.path().join("elsewhere").join("cache");
    let mut args = TARGETS.to_vec();
    args.extend(["--cache", b_cache.to_str().unwrap()]);
    let b_run = b.run(&args, 0);
    assert_eq!(a_run.done.2, 0, "{}", a_run.stderr);
    assert_same_units(&a.cache(), &a_run.keys, &b_cache, &b_run.keys);
    for (cache, project) in [(a.cache(), a.path()), (b_cache.clone(), b.path())] {
        let naming = artifact_files_naming(&cache, project);
        assert!(
            naming.is_empty(),
            "artifacts naming {}: {naming:#?}",
            project.display()
        );
    }
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

/// Issue 13, item 13: one label set everywhere. The pipelines' `positive` /
/// `negative`, the labels the demo annotation prompt asks for, and the
/// labels of the human annotations are the same two strings.
#[test]
fn pipelines_prompt_and_human_labels_use_one_label_set() {
    let param = |text: &str, name: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("param {name} = ")))
            .unwrap_or_else(|| panic!("no param {name}"));
        line.split('"').nth(1).unwrap().to_string()
    };
    let mut sets = BTreeSet::new();
    for f in [
        "pipelines/definemed.flow",
        "pipelines/training-dynamics.flow",
    ] {
        let text = std::fs::read_to_string(Path::new(ROOT).join(f)).unwrap();
        sets.insert(BTreeSet::from([
            param(&text, "positive"),
            param(&text, "negative"),
        ]));
        assert!(text.contains("param annotate_max_chars = "), "{f}");
    }
    let human = std::fs::read_to_string(Path::new(ROOT).join("data/demo/labels.csv")).unwrap();
    sets.insert(
        human
            .lines()
            .skip(1)
            .filter_map(|l| l.rsplit(',').next())
            .map(str::to_string)
            .collect(),
    );
    let prompt =
        std::fs::read_to_string(Path::new(ROOT).join("data/demo/annotate_prompt.txt")).unwrap();
    let asked: BTreeSet<String> = prompt
        .split("{\"label\": \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|s| !s.starts_with('<'))
        .map(str::to_string)
        .collect();
    sets.insert(asked);
    assert_eq!(sets.len(), 1, "label sets differ: {sets:?}");
    let curate =
        std::fs::read_to_string(Path::new(ROOT).join("pipelines/definemed/curate.flow")).unwrap();
    assert!(
        curate.contains("max_chars: annotate_max_chars"),
        "max_chars is a param"
    );
}

#[test]
fn definemed_runs_every_stage_on_a_tiny_model_and_reports_sane_numbers() {
    let (_annotator, url) = keyword_annotator();
    let p = Project::new(&pipeline(&url));
    tiny_model("qwen2", &p.path().join("tiny"));

    // The report and the two results it does not read.
    let targets = TARGETS;
    let run = p.run(&targets, 0);
    let (ran, cached, failed, skipped) = run.done;
    assert_eq!((cached, failed, skipped), (0, 0, 0), "{}", run.stderr);
    // Every stage of the method ran, each map element on its own; the demo's
    // own model download is not needed once `source` is bound.
    let nodes: BTreeSet<String> = run
        .status
        .keys()
        .map(|n| n.split('[').next().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = [
        "raw",
        "picked",
        "labels",
        "agree",
        "classifier",
        "medical",
        "unique",
        "split",
        "packed",
        "packed_heldout",
        "cpt",
        "merged",
        "mmlux_source",
        "mmlux_cpt",
        "mmlux_merged",
        "medqa_source",
        "medqa_cpt",
        "medqa_merged",
        "gain",
        "gain_medqa",
        "mmlux_larger",
        "medqa_larger",
        "gain_larger",
        "gain_medqa_larger",
        "heldout_source",
        "heldout_cpt",
        "heldout_merged",
        "source_vs_larger",
        "answers_source",
        "answers_larger",
        "answers",
        "vs_source",
        "vs_larger",
        "ranking_source",
        "ranking_larger",
        "failures",
        "summary",
    ]
    .iter()
    .map(|n| format!("demo.{n}"))
    .collect();
    assert_eq!(nodes, expected);
    assert_eq!(run.with("ran").len(), ran as usize);
    for element in ["demo.merged[0]", "demo.merged[1]", "demo.vs_larger[1]"] {
        assert_eq!(
            run.status.get(element).map(String::as_str),
            Some("ran"),
            "{element}"
        );
    }

    // Curation: the filter kept some of the 334 documents, and dedup
    // removed some of the planted copies from what it kept.
    let filter = read_json(&artifact(&p, "demo.medical").join("filter.json"));
    let dedup = read_json(&artifact(&p, "demo.unique").join("dedup.json"));
    assert_eq!(num(&filter["documents_in"], "filter in"), 334.0);
    let kept = num(&filter["documents_out"], "filter out");
    assert!(kept > 0.0 && kept < 334.0, "filter kept {kept}");
    assert_eq!(num(&dedup["documents_in"], "dedup in"), kept);
    let unique = num(&dedup["documents_out"], "dedup out");
    let removed = num(&dedup["exact_duplicates"], "exact") + num(&dedup["near_duplicates"], "near");
    assert!(removed > 0.0 && unique == kept - removed, "{dedup}");

    // Training: 3 steps, finite losses, two checkpoints with their lineage.
    let cpt = artifact(&p, "demo.cpt");
    let losses = LossLine::read_all(&cpt).unwrap();
    assert_eq!(losses.len(), 3);
    for l in &losses {
        let loss = l.loss.expect("a finite loss");
        assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    }

    // Evaluation: accuracies are fractions of the 18 MMLU-X and 6 MedQA items.
    for (node, n) in [("demo.mmlux_source", 18.0), ("demo.medqa_source", 6.0)] {
        let m = read_json(&artifact(&p, node).join("mcqa.json"));
        assert_eq!(num(&m["n"], "n"), n, "{node}");
        let acc = num(&m["acc"], "acc");
        assert!((0.0..=1.0).contains(&acc), "{node} acc {acc}");
        assert!(
            (acc * n).fract().abs() < 1e-9,
            "{node}: acc {acc} is not k/{n}"
        );
    }
    let mut decisive = 0.0;
    for i in 0..2 {
        let judge = read_json(&artifact(&p, &format!("demo.vs_source[{i}]")).join("judge.json"));
        decisive += num(&judge["wins"], "wins") + num(&judge["losses"], "losses");
        let total: f64 = ["wins", "ties", "losses", "unparseable"]
            .iter()
            .map(|k| num(&judge[k], k))
            .sum();
        assert_eq!(total, num(&judge["n"], "n"), "{judge}");
        assert_eq!(
            num(&judge["n"], "n"),
            6.0,
            "six prompts, each judged in both orders"
        );
    }
    let ranking = read_json(&artifact(&p, "demo.ranking_source").join("davidson.json"));
    let strengths = ranking["strengths"].as_object().expect("strengths");
    assert_eq!(
        strengths.len(),
        3,
        "two checkpoints and the source: {ranking}"
    );
    let sum: f64 = strengths.values().map(|v| num(v, "strength")).sum();
    assert!((sum - 1.0).abs() < 1e-9, "strengths sum to {sum}");
    // Davidson's model on the judges' tallies: when every comparison is a
    // tie the likelihood grows without bound in the tie parameter (null) and
    // no model is preferred (equal strengths); any decisive verdict makes
    // the tie parameter a finite positive number.
    if decisive == 0.0 {
        assert!(ranking["tie"].is_null(), "all ties, yet {ranking}");
        for v in strengths.values() {
            assert!((num(v, "strength") - 1.0 / 3.0).abs() < 1e-9, "{ranking}");
        }
    } else {
        let tie = num(&ranking["tie"], "tie");
        assert!(tie.is_finite() && tie > 0.0, "{ranking}");
    }

    let gain = read_json(&artifact(&p, "demo.gain").join("relative_gain.json"));
    let agree = read_json(&artifact(&p, "demo.agree").join("agreement.json"));
    let base = num(&gain["baseline"]["acc"], "baseline acc");
    let scores = gain["scores"].as_array().expect("scores");
    assert_eq!(scores.len(), 2, "one gain per merged checkpoint");
    for g in scores {
        let expected = num(&g["acc"], "acc") / base;
        assert!((num(&g["g_rel"], "g_rel") - expected).abs() < 1e-12, "{g}");
    }
    assert!(num(&agree["compared"], "compared") > 0.0, "{agree}");

    // Issue 13, item 2: MedQA's G_rel, from the accuracies in mcqa.json: the
    // ratio, or null with the reason (and counted) when the source scored 0.
    let acc = |node: &str| {
        num(
            &read_json(&artifact(&p, node).join("mcqa.json"))["acc"],
            node,
        )
    };
    let medqa_base = acc("demo.medqa_source");
    let gain_medqa = read_json(&artifact(&p, "demo.gain_medqa").join("relative_gain.json"));
    let mut medqa_gains = Vec::new();
    for i in 0..2 {
        let g = &gain_medqa["scores"][i];
        let merged_acc = acc(&format!("demo.medqa_merged[{i}]"));
        if medqa_base == 0.0 {
            assert!(g["g_rel"].is_null(), "{gain_medqa}");
            assert!(g["undefined"].as_str().is_some(), "{gain_medqa}");
            medqa_gains.push(None);
        } else {
            let expected = merged_acc / medqa_base;
            assert!((num(&g["g_rel"], "g_rel") - expected).abs() < 1e-12, "{g}");
            medqa_gains.push(Some(expected));
        }
    }
    if medqa_base == 0.0 {
        assert_eq!(gain_medqa["undefined"], 2, "{gain_medqa}");
    }

    // Issue 13, item 6: the held-out split and the held-out loss.
    let split = read_json(&artifact(&p, "demo.split").join("holdout.json"));
    let held = num(&split["heldout_documents"], "held out");
    assert_eq!(
        held + num(&split["train_documents"], "train"),
        unique,
        "{split}"
    );
    assert_eq!(held, (0.1 * unique).round().max(1.0), "{split}");
    let source_loss = read_json(&artifact(&p, "demo.heldout_source").join("heldout_loss.json"));
    assert!(source_loss["checkpoint"].is_null(), "{source_loss}");
    let mut heldout_losses = Vec::new();
    for node in [
        "demo.heldout_source",
        "demo.heldout_cpt[0]",
        "demo.heldout_cpt[1]",
        "demo.heldout_merged[1]",
    ] {
        let l = read_json(&artifact(&p, node).join("heldout_loss.json"));
        let loss = num(&l["loss"], "held-out loss");
        assert!(loss.is_finite() && loss > 0.0, "{node}: {l}");
        assert!(num(&l["tokens"], "tokens") > 0.0, "{node}: {l}");
        heldout_losses.push(loss);
    }
    let ck1 = read_json(&artifact(&p, "demo.heldout_cpt[1]").join("heldout_loss.json"));
    assert!(
        num(&ck1["checkpoint"]["tokens_seen"], "tokens seen") > 0.0,
        "{ck1}"
    );
    let f1 = num(&agree["majority"]["f1"], "f1");
    assert!((0.0..=1.0).contains(&f1), "{agree}");
    // The report names every section and carries the accuracies.
    let report = artifact(&p, "demo.summary");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    for needle in [
        "MMLU-X source",
        "MMLU-X cpt+slerp",
        "MMLU-X cpt @ step",
        "MedQA source",
        "Relative gain G_rel",
        "## Curation",
        "tokens after packing",
        "Training: loss and learning rate",
        "Davidson",
        "step-",
        "## CPT alone vs CPT + SLERP",
        "## Against the larger model: win rate and per-prompt flows",
        "## Held-out domain loss",
        "(gain_vs_source_tokens.png)",
        "(gain_vs_larger_tokens.png)",
        "(cpt_vs_slerp_tokens.png)",
        "(win_rate_vs_larger_tokens.png)",
        "(flow_vs_larger.png)",
        "(heldout_loss_tokens.png)",
        "documents held out of training",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    // The report's rows, recomputed here from the artifacts they come from.
    let lineage =
        |node: &str| read_json(&artifact(&p, node).join("mcqa.json"))["checkpoint"].clone();
    for (i, medqa_gain) in medqa_gains.iter().enumerate() {
        let step = lineage(&format!("demo.mmlux_cpt[{i}]"))["step"]
            .as_u64()
            .unwrap();
        let (raw, merged) = (
            acc(&format!("demo.mmlux_cpt[{i}]")),
            acc(&format!("demo.mmlux_merged[{i}]")),
        );
        let row = format!("| MMLU-X | {step} | ");
        let line = md
            .lines()
            .find(|l| l.starts_with(&row))
            .unwrap_or_else(|| panic!("no {row:?}:\n{md}"));
        assert!(
            line.contains(&format!(
                "| {raw:.4} | {merged:.4} | {:+.4} |",
                merged - raw
            )),
            "{line}"
        );
        // The mean G_rel against the source: MMLU-X and MedQA, or MMLU-X alone
        // when MedQA's is undefined.
        let mmlux = merged / acc("demo.mmlux_source");
        let (label, mean) = match medqa_gain {
            Some(m) => ("mean of 2 benchmarks".to_owned(), (mmlux + m) / 2.0),
            None => (
                "mean of 1 of 2 benchmarks (the rest undefined)".to_owned(),
                mmlux,
            ),
        };
        let row = format!("| {label} @ step {step} | source |  |  | {mean:.4} |");
        assert!(md.contains(&row), "no {row:?}:\n{md}");
    }
    if medqa_base == 0.0 {
        assert!(md.contains("**G_rel is undefined for"), "{md}");
    }
    let loss_row = format!("| source | – | {:.4} |", heldout_losses[0]);
    assert!(md.contains(&loss_row), "no {loss_row:?}:\n{md}");
    // The win rate against the larger model: the source's, then the last checkpoint's.
    let win = |node: &str| read_json(&artifact(&p, node).join("judge.json"));
    let (before, after) = (win("demo.source_vs_larger"), win("demo.vs_larger[1]"));
    let rate = |j: &Value| {
        let judged = num(&j["wins"], "w") + num(&j["ties"], "t") + num(&j["losses"], "l");
        num(&j["wins"], "w") / judged
    };
    let row = format!("| vs larger | {:.3} | {:.3} |", rate(&before), rate(&after));
    assert!(md.contains(&row), "no {row:?}:\n{md}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "the HTML report inlines its charts");
    let pngs = std::fs::read_dir(&report)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert!(pngs >= 3, "{pngs} PNG charts");

    // A second run is a no-op.
    let again = p.run(&targets, 0);
    assert_eq!(again.done, (0, ran, 0, 0));

    // A new learning rate reruns training and what follows it, nothing else.
    let out = p.flow(&[
        "plan",
        "p.flow",
        "demo.summary",
        "--json",
        "--set",
        "demo.lr=1e-5",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let mut to_run = BTreeSet::new();
    for line in stdout.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["status"] != "cached" {
            to_run.insert(e["node"].as_str().unwrap().to_string());
        }
    }
    for stays in [
        "demo.labels",
        "demo.unique",
        "demo.split",
        "demo.packed",
        "demo.packed_heldout",
        "demo.heldout_source",
        "demo.mmlux_source",
        "demo.answers_source",
    ] {
        assert!(
            !to_run.contains(stays),
            "{stays} must stay cached: {to_run:?}"
        );
    }
    for reruns in ["demo.cpt", "demo.summary"] {
        assert!(to_run.contains(reruns), "{reruns} must rerun: {to_run:?}");
    }
}

#[test]
fn training_dynamics_adapts_two_sizes_on_one_curated_corpus() {
    let (_annotator, url) = keyword_annotator();
    let p = Project::new(&format!(
        r#"# training-dynamics.flow with two tiny models as the sizes
small = dir("small")
medium = dir("medium")
param keyword_annotator = "keyword-annotator"
import "{ROOT}/pipelines/training-dynamics.flow" as td with {{
    size_s: small,
    size_m: medium,
    next_tier: medium,
    annotator: keyword_annotator,
    judge_model: small,
    annotate_backend: "openai",
    annotate_url: "{url}",
{TINY_PARAMS}}}
"#
    ));
    tiny_model("qwen2", &p.path().join("small"));
    tiny_model("llama", &p.path().join("medium"));
    let run = p.run(&["td.summary"], 0);
    assert_eq!(run.done.2, 0, "{}", run.stderr);
    // Curation ran once, for both sizes; each size trained and merged its own.
    for node in [
        "td.labels",
        "td.unique",
        "td.s.cpt",
        "td.m.cpt",
        "td.s.merged[1]",
        "td.m.merged[1]",
    ] {
        assert_eq!(
            run.status.get(node).map(String::as_str),
            Some("ran"),
            "{node}"
        );
    }
    assert!(
        !run.status.keys().any(|n| n.starts_with("td.s.labels")),
        "curation is shared"
    );
    let s_cpt = artifact(&p, "td.s.cpt");
    let m_cpt = artifact(&p, "td.m.cpt");
    assert_ne!(s_cpt, m_cpt, "two sizes, two training runs");
    // The report's compute table has one row per size, with its own parameter count.
    let md = std::fs::read_to_string(artifact(&p, "td.summary").join("report.md")).unwrap();
    for series in ["S source", "S merged", "M source", "M merged"] {
        assert!(md.contains(series), "report.md lacks {series:?}:\n{md}");
    }
    // Per size: G_rel against its source and against the next size, the
    // win rate and category flows against the larger model, the held-out loss.
    for needle in [
        "(gain_vs_s_source_tokens.png)",
        "(gain_vs_s_vs_m_tokens.png)",
        "(gain_vs_m_source_tokens.png)",
        "(gain_vs_m_vs_next_tier_tokens.png)",
        "(flow_s_vs_m.png)",
        "(flow_m_vs_next_tier.png)",
        "| S MMLU-X | ",
        "| M MedQA | ",
        "| S cpt @ step ",
        "| M merged @ step ",
    ] {
        assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
    }
    let compute = md.split("## Compute").nth(1).expect("a compute section");
    let rows: Vec<&str> = compute
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| run") && !l.starts_with("| ---"))
        .collect();
    assert_eq!(rows.len(), 2, "{compute}");
    let cell = |row: &str, i: usize| row.split('|').nth(i).unwrap().trim().to_string();
    assert_ne!(cell(rows[0], 2), cell(rows[1], 2), "parameters: {compute}");
    for row in &rows {
        assert_ne!(cell(row, 6), "–", "device-hours recorded: {compute}");
        assert!(cell(row, 7).contains("threads"), "device: {compute}");
    }
}
