use super::*;
use crate::op::testing::run_op;
use serde_json::{json, Value as Json};

fn put(dir: &Path, file: &str, v: &Json) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Builds artifacts of every kind under `root`; returns the report params.
/// An `mcqa.json` as the mcqa op writes it.
fn mcqa_result(acc: f64, model: &str, checkpoint: Option<Json>) -> Json {
    serde_json::to_value(crate::eval::mcqa::McqaResult {
        format: "mmlux".into(),
        shots: 1,
        n: 1000,
        acc,
        acc_norm: acc + 0.01,
        acc_stderr: 0.01,
        acc_norm_stderr: 0.01,
        acc_macro: acc,
        acc_norm_macro: acc + 0.01,
        averaging: String::new(),
        subjects: Default::default(),
        model: Some(model.to_owned()),
        checkpoint: checkpoint.map(|c| serde_json::from_value(c).unwrap()),
    })
    .unwrap()
}

pub(crate) fn sample_artifacts(root: &Path) -> Vec<(&'static str, Value)> {
    let mut mcqa = Vec::new();
    let mut series = Vec::new();
    let n_params = 5.0e8;
    for (k, (name, acc)) in [
        ("cpt", [0.41, 0.45, 0.47, 0.48]),
        ("cpt+slerp", [0.44, 0.49, 0.51, 0.52]),
    ]
    .iter()
    .enumerate()
    {
        for (i, a) in acc.iter().enumerate() {
            let tokens = 1.0e9 * (1u64 << i) as f64;
            let d = root.join(format!("mcqa_{k}_{i}"));
            put(
                &d,
                "mcqa.json",
                &mcqa_result(
                    *a,
                    &format!("/store/{name}-{i}"),
                    Some(
                        json!({"step": 100 * (i + 1), "tokens_seen": tokens, "flops": 6.0 * n_params * tokens}),
                    ),
                ),
            );
            mcqa.push(Value::Path(d));
            series.push(Value::Str((*name).into()));
        }
    }
    for (name, acc) in [("source 0.5B", 0.43), ("reference 1.5B", 0.55)] {
        let d = root.join(format!("mcqa_{}", name.replace(' ', "_")));
        put(&d, "mcqa.json", &mcqa_result(acc, "/store/x", None));
        mcqa.push(Value::Path(d));
        series.push(Value::Str(name.into()));
    }
    let mut scores = serde_json::Map::new();
    let mut ci = serde_json::Map::new();
    let mut cks = serde_json::Map::new();
    let mut counts = serde_json::Map::new();
    let mut rel = serde_json::Map::new();
    let mut models = vec![json!("source")];
    for i in 0..4 {
        let m = format!("ckpt-{i}");
        let s = 0.5 + 0.05 * i as f64;
        scores.insert(m.clone(), json!(s));
        let r = 0.5 + 0.08 * i as f64;
        rel.insert(m.clone(), json!(r));
        ci.insert(
            m.clone(),
            json!({"score": [s - 0.04, s + 0.04], "relative_strength": [r - 0.05, r + 0.05]}),
        );
        cks.insert(m.clone(), json!({"tokens_seen": 1.0e9 * (1u64 << i) as f64, "flops": 6.0 * n_params * 1.0e9 * (1u64 << i) as f64}));
        counts.insert(
            m.clone(),
            json!({"wins": 10 + i, "ties": 5, "losses": 10 - i}),
        );
        models.push(json!(m));
    }
    scores.insert("source".into(), json!(0.5));
    counts.insert(
        "source".into(),
        json!({"wins": 34, "ties": 20, "losses": 46}),
    );
    let dav = root.join("davidson");
    put(
        &dav,
        "davidson.json",
        &json!({"models": models, "baseline": "source", "score": scores, "ci": ci, "checkpoints": cks,
            "counts": counts, "strengths": {}, "relative_strength": rel, "tie": 0.8, "comparisons": 100}),
    );
    let jd = root.join("judge");
    put(
        &jd,
        "judge.json",
        &json!({"model_a": "ckpt-3", "model_b": "source", "wins": 12, "ties": 5, "losses": 8, "unparseable": 1, "inconsistent": 3}),
    );
    let fm = root.join("fm");
    put(
        &fm,
        "failure_modes.json",
        &json!({"model": "ckpt-3", "language_mixing": {"flagged_share": 0.2, "mean_foreign_share": 0.05},
            "verbosity": {"mean_ratio": 1.4, "longer_share": 0.3, "truncated_share": 0.1}, "repetition": {"flagged_share": 0.05}}),
    );
    let tr = root.join("train");
    put(
        &tr,
        "flow_checkpoint.json",
        &json!({"step": 400, "tokens_seen": 8.0e9, "flops": 6.0 * n_params * 8.0e9, "source": "qwen-0.5b"}),
    );
    std::fs::write(
        tr.join("losses.jsonl"),
        "{\"step\": 400, \"loss\": 2.0, \"tokens_seen\": 8000000000, \"elapsed_s\": 7200}\n",
    )
    .unwrap();
    vec![
        ("mcqa", Value::List(mcqa)),
        ("mcqa_series", Value::List(series)),
        ("davidson", Value::List(vec![Value::Path(dav)])),
        ("judge", Value::List(vec![Value::Path(jd)])),
        ("failure_modes", Value::List(vec![Value::Path(fm)])),
        ("train", Value::List(vec![Value::Path(tr)])),
        ("device", Value::Str("NVIDIA H100".into())),
    ]
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n") && b.len() > 5000)
        .unwrap_or(false)
}

#[test]
fn train_series_name_the_compute_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let mut params = sample_artifacts(tmp.path());
    params.push((
        "train_series",
        Value::List(vec![Value::Str("Qwen2.5-0.5B".into())]),
    ));
    let out = tmp.path().join("out");
    run_op(&Report, &params, &out).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| Qwen2.5-0.5B | 500.0M | 8.0B | 2.400e19 | 2.00h × 1 |"),
        "{md}"
    );
    params.pop();
    let two = Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]);
    params.push(("train_series", two));
    let err = run_op(&Report, &params, &tmp.path().join("out2")).unwrap_err();
    assert!(
        err.to_string()
            .contains("parameter `train_series`: 2 names for 1 train runs"),
        "{err}"
    );
}

#[test]
fn report_has_every_section_chart_and_table() {
    let tmp = tempfile::tempdir().unwrap();
    let params = sample_artifacts(tmp.path());
    let out = tmp.path().join("out");
    let res = run_op(&Report, &params, &out);
    res.unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for stem in [
        "mcqa_accuracy",
        "mcqa_tokens",
        "mcqa_flops",
        "davidson_tokens",
        "davidson_flops",
        "judge_wtl",
        "failure_modes",
    ] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}.png");
        let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("<text"),
            "{stem}.svg has no text"
        );
        assert!(
            md.contains(&format!("({stem}.png)")),
            "{stem} not in report.md"
        );
    }
    // Tables: MCQA rows, the Davidson interval, the compute row (FLOPs = 6·N·tokens, 2 h on 1 device).
    assert!(
        md.contains("| cpt+slerp @ step 400 | 8.0B | 2.400e19 | 0.5200 |"),
        "{md}"
    );
    assert!(
        md.contains("| ckpt-2 | source | – | 0.660 | 0.600 | [0.610, 0.710] | 12/5/8 | 4.0B |"),
        "{md}"
    );
    assert!(
        md.contains("| qwen-0.5b | 500.0M | 8.0B | 2.400e19 | 2.00h × 1 | 2.00 | NVIDIA H100 |"),
        "{md}"
    );
    assert!(
        md.contains("| ckpt-3 vs source | 12 | 5 | 8 | 1 | 3 | 0.480 |"),
        "{md}"
    );
    // FLOW_KEEP_REPORT=DIR keeps the report for looking at the charts.
    if let Ok(keep) = std::env::var("FLOW_KEEP_REPORT") {
        std::fs::create_dir_all(&keep).unwrap();
        for e in std::fs::read_dir(&out).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), Path::new(&keep).join(e.file_name())).unwrap();
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 8); // 7 + the training loss curve
    assert!(
        !html.contains("<img"),
        "the HTML must not depend on files beside it"
    );
    // Axis labels and legends are in the charts.
    let svg = std::fs::read_to_string(out.join("mcqa_tokens.svg")).unwrap();
    for text in ["Tokens seen", "cpt+slerp", "reference 1.5B", "acc"] {
        assert!(svg.contains(text), "mcqa_tokens.svg lacks {text}");
    }
}

#[test]
fn report_tolerates_missing_kinds() {
    let tmp = tempfile::tempdir().unwrap();
    let res = run_op(&Report, &[], &tmp.path().join("out"));
    res.unwrap();
    let md = std::fs::read_to_string(tmp.path().join("out/report.md")).unwrap();
    assert!(md.contains("No artifacts were given."));
    let res = run_op(
        &Report,
        &[(
            "mcqa",
            Value::List(vec![Value::Path(tmp.path().join("nope"))]),
        )],
        &tmp.path().join("o2"),
    );
    assert!(format!("{:?}", res.unwrap_err()).contains("nope"));
}

/// Issue 13, item 11: both Davidson figures are in the table, the report
/// says which is plotted, and a judge that only ties is called out.
#[test]
fn davidson_section_names_the_plotted_figure_and_flags_an_all_tie_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let mut params = sample_artifacts(tmp.path());
    let out = tmp.path().join("out");
    run_op(&Report, &params, &out).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Plotted: **the normalised strength π / (π + π_baseline)**"),
        "{md}"
    );
    assert!(!md.contains("could not discriminate"), "{md}");
    let svg = std::fs::read_to_string(out.join("davidson_tokens.svg")).unwrap();
    assert!(svg.contains("normalised strength"), "{svg}");
    params.push(("davidson_metric", Value::Str("score".into())));
    let out = tmp.path().join("out_score");
    run_op(&Report, &params, &out).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("Plotted: **the score P(win) + P(tie)/2**"),
        "{md}"
    );
    assert!(
        md.contains("| ckpt-2 | source | – | 0.660 | 0.600 | [0.560, 0.640] | 12/5/8 | 4.0B |"),
        "{md}"
    );
    // A judge that answered only ties (the demo's 135M judge).
    let dav = tmp.path().join("ties");
    put(
        &dav,
        "davidson.json",
        &json!({"models": ["source", "step-2"], "baseline": "source", "score": {"source": 0.5, "step-2": 0.5},
            "strengths": {"source": 0.5, "step-2": 0.5}, "tie": null, "comparisons": 24,
            "counts": {"source": {"wins": 0, "ties": 24, "losses": 0}, "step-2": {"wins": 0, "ties": 24, "losses": 0}}}),
    );
    let out = tmp.path().join("out_ties");
    run_op(
        &Report,
        &[("davidson", Value::List(vec![Value::Path(dav)]))],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("The judge could not discriminate against source: every one of its 24 comparisons is a tie"), "{md}");
    assert!(md.contains("gpt-4.1-mini"), "{md}");
    // Without `relative_strength` (older artifacts) it comes from the strengths.
    assert!(
        md.contains("| step-2 | source | 0.5000 | 0.500 | 0.500 |"),
        "{md}"
    );
}

/// Issue 13, item 6: the loss curve and the learning-rate schedule of each
/// train node, from its losses.jsonl.
#[test]
fn training_section_plots_loss_and_learning_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let tr = tmp.path().join("train");
    std::fs::create_dir_all(&tr).unwrap();
    // 10 steps: warmup over 2 steps to 1e-4, then linear decay; loss falls 3.0 -> 2.1.
    let mut lines = String::new();
    for step in 1..=10 {
        let lr = if step <= 2 {
            1e-4 * (step - 1) as f64 / 2.0
        } else {
            1e-4 * (10 - step + 1) as f64 / 8.0
        };
        let lr = if step == 3 { 1e-4 } else { lr };
        let loss = 3.0 - 0.1 * (step - 1) as f64;
        lines.push_str(&format!(
            "{{\"step\": {step}, \"loss\": {loss}, \"lr\": {lr}, \"tokens_seen\": {}}}\n",
            step * 64
        ));
    }
    std::fs::write(tr.join("losses.jsonl"), lines).unwrap();
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("train", Value::List(vec![Value::Path(tr)])),
            ("train_series", Value::List(vec![Value::Str("S".into())])),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Training: loss and learning rate"), "{md}");
    assert!(
        md.contains("| S | 10 | 3.0000 | 2.1000 | 2.1000 | -0.9000 | 1.000e-4 | 3 |"),
        "{md}"
    );
    for stem in ["training_loss", "learning_rate"] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}");
        assert!(md.contains(&format!("({stem}.png)")), "{md}");
    }
}

/// Issue 13, item 2: G_rel per benchmark and averaged per checkpoint, over
/// tokens and FLOPs (004 eq. 1, Figs 1a, 5a).
#[test]
fn gain_section_has_per_benchmark_and_mean_gains() {
    let tmp = tempfile::tempdir().unwrap();
    let mut gains = Vec::new();
    // MMLU-X: baseline 0.40, checkpoints 0.42, 0.44; MedQA: baseline 0.50, 0.50, 0.55.
    for (name, base, accs) in [("mmlux", 0.40, [0.42, 0.44]), ("medqa", 0.50, [0.50, 0.55])] {
        let d = tmp.path().join(name);
        let scores: Vec<Json> = accs
            .iter()
            .enumerate()
            .map(|(i, a)| json!({"acc": a, "g_rel": a / base, "checkpoint": {"step": 10 * (i + 1), "tokens_seen": 1.0e6 * (i + 1) as f64, "flops": 6.0e14 * (i + 1) as f64}}))
            .collect();
        put(
            &d,
            "relative_gain.json",
            &json!({"metric": "acc", "baseline": {"source": "/store/source", "acc": base}, "scores": scores}),
        );
        gains.push(Value::Path(d));
    }
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("gain", Value::List(gains)),
            (
                "gain_series",
                Value::List(vec![
                    Value::Str("MMLU-X".into()),
                    Value::Str("MedQA".into()),
                ]),
            ),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| MMLU-X @ step 20 | source | 0.4400 | 0.4000 | 1.1000 | 2.0M |"),
        "{md}"
    );
    assert!(
        md.contains("| MedQA @ step 10 | source | 0.5000 | 0.5000 | 1.0000 | 1.0M |"),
        "{md}"
    );
    // mean of 1.05 and 1.00; of 1.10 and 1.10
    assert!(
        md.contains("| mean of 2 benchmarks @ step 10 | source |  |  | 1.0250 | 1.0M |"),
        "{md}"
    );
    assert!(
        md.contains("| mean of 2 benchmarks @ step 20 | source |  |  | 1.1000 | 2.0M |"),
        "{md}"
    );
    for stem in ["gain_vs_source_tokens", "gain_vs_source_flops"] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}");
    }
}

/// A `relative_gain.json` of `accs` over `base` (None: an undefined ratio,
/// as the op writes it for a baseline accuracy of 0), at steps 10, 20, ...
fn gain_artifact(dir: &Path, base: f64, accs: &[f64]) -> Value {
    let scores: Vec<Json> = accs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ck = json!({"step": 10 * (i + 1), "tokens_seen": 1.0e6 * (i + 1) as f64, "flops": 6.0e14 * (i + 1) as f64});
            if base > 0.0 {
                json!({"acc": a, "g_rel": a / base, "checkpoint": ck})
            } else {
                json!({"acc": a, "g_rel": null, "undefined": "the baseline's accuracy is 0", "checkpoint": ck})
            }
        })
        .collect();
    let undefined = if base > 0.0 { 0 } else { accs.len() };
    put(
        dir,
        "relative_gain.json",
        &json!({"metric": "acc", "baseline": {"source": "/store/x", "acc": base}, "scores": scores, "undefined": undefined}),
    );
    Value::Path(dir.to_path_buf())
}

/// Issue 13, items 1 and 2: G_rel against the source and against the larger
/// model, each with its own mean and figures; a benchmark whose baseline
/// scored 0 is named as undefined and left out of the mean.
#[test]
fn gain_section_separates_baselines_and_reports_undefined_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let gains = vec![
        // vs source: MMLU-X 0.40 -> 0.42, 0.44; MedQA source 0 -> undefined.
        gain_artifact(&tmp.path().join("a"), 0.40, &[0.42, 0.44]),
        gain_artifact(&tmp.path().join("b"), 0.0, &[1.0 / 6.0, 2.0 / 6.0]),
        // vs larger: MMLU-X 0.60; MedQA 0.50.
        gain_artifact(&tmp.path().join("c"), 0.60, &[0.42, 0.44]),
        gain_artifact(&tmp.path().join("d"), 0.50, &[1.0 / 6.0, 2.0 / 6.0]),
    ];
    let names = |v: &[&str]| Value::List(v.iter().map(|s| Value::Str((*s).into())).collect());
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("gain", Value::List(gains)),
            (
                "gain_series",
                names(&["MMLU-X", "MedQA", "MMLU-X", "MedQA"]),
            ),
            (
                "gain_baseline",
                names(&["source", "source", "larger", "larger"]),
            ),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for row in [
        "| MedQA @ step 10 | source | 0.1667 | 0.0000 | undefined | 1.0M |",
        // only MMLU-X is defined against the source: 0.42 / 0.40
        "| mean of 1 of 2 benchmarks (the rest undefined) @ step 10 | source |  |  | 1.0500 | 1.0M |",
        // against the larger model: (0.42/0.60 + (1/6)/0.50) / 2 = (0.7 + 0.33333) / 2
        "| mean of 2 benchmarks @ step 10 | larger |  |  | 0.5167 | 1.0M |",
        // (0.44/0.60 + (2/6)/0.50) / 2 = (0.73333 + 0.66667) / 2
        "| mean of 2 benchmarks @ step 20 | larger |  |  | 0.7000 | 2.0M |",
    ] {
        assert!(md.contains(row), "missing {row:?}:\n{md}");
    }
    assert!(
        md.contains("**G_rel is undefined for 1 benchmark(s)**: MedQA vs source: 2 of 2"),
        "{md}"
    );
    for stem in [
        "gain_vs_source_tokens",
        "gain_vs_source_flops",
        "gain_vs_larger_tokens",
        "gain_vs_larger_flops",
    ] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}");
        assert!(md.contains(&format!("({stem}.png)")), "{stem}");
    }
    let err = run_op(
        &Report,
        &[
            ("gain", Value::List(vec![Value::Path(tmp.path().join("a"))])),
            ("gain_baseline", names(&["source", "larger"])),
        ],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("parameter `gain_baseline`: 2 names for 1 relative_gain items"),
        "{err}"
    );
}

/// Issue 13, item 3 (004 Fig. 3): raw checkpoints beside their merges,
/// paired by step, with the difference.
#[test]
fn cpt_section_pairs_raw_checkpoints_with_their_merges() {
    let tmp = tempfile::tempdir().unwrap();
    let group = |name: &str, accs: &[f64]| -> Value {
        Value::List(
            accs.iter()
                .enumerate()
                .map(|(i, a)| {
                    let d = tmp.path().join(format!("{name}{i}"));
                    let ck = json!({"step": 4 * (i + 1), "tokens_seen": 4096.0 * (i + 1) as f64, "flops": 1.0e12 * (i + 1) as f64});
                    put(&d, "mcqa.json", &mcqa_result(*a, "/store/m", Some(ck)));
                    Value::Path(d)
                })
                .collect(),
        )
    };
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("cpt", Value::List(vec![group("raw", &[0.30, 0.25])])),
            (
                "cpt_merged",
                Value::List(vec![group("merged", &[0.35, 0.40])]),
            ),
            ("cpt_series", Value::List(vec![Value::Str("MMLU-X".into())])),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## CPT alone vs CPT + SLERP"), "{md}");
    // 0.35 - 0.30 and 0.40 - 0.25
    assert!(
        md.contains("| MMLU-X | 4 | 4.1k | 0.3000 | 0.3500 | +0.0500 |"),
        "{md}"
    );
    assert!(
        md.contains("| MMLU-X | 8 | 8.2k | 0.2500 | 0.4000 | +0.1500 |"),
        "{md}"
    );
    for stem in ["cpt_vs_slerp_tokens", "cpt_vs_slerp_flops"] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}");
    }
    let err = run_op(
        &Report,
        &[("cpt", Value::List(vec![group("raw", &[0.3])]))],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("parameters `cpt` and `cpt_merged`: 1 and 0 items"),
        "{err}"
    );
}

/// A judge node: `judge.json` with the counts, and `verdicts.jsonl` with one
/// combined winner per prompt id.
fn judge_artifact(
    dir: &Path,
    model_a: &str,
    tokens: Option<f64>,
    winners: &[(&str, Option<&str>)],
) -> Value {
    let count = |w: &str| winners.iter().filter(|x| x.1 == Some(w)).count();
    let (wins, ties, losses) = (count("A"), count("0"), count("B"));
    let judged = (wins + ties + losses) as f64;
    put(
        dir,
        "judge.json",
        &json!({"model_a": model_a, "model_b": "larger", "wins": wins, "ties": ties, "losses": losses,
            "win_rate": wins as f64 / judged, "score": (wins as f64 + ties as f64 / 2.0) / judged,
            "checkpoint_a": tokens.map(|t| json!({"step": t / 1000.0, "tokens_seen": t, "flops": t * 1.0e9}))}),
    );
    let text: String = winners
        .iter()
        .map(|(id, w)| {
            format!(
                "{}\n",
                json!({"id": id, "model_a": model_a, "model_b": "larger", "winner": w})
            )
        })
        .collect();
    std::fs::write(dir.join("verdicts.jsonl"), text).unwrap();
    Value::Path(dir.to_path_buf())
}

/// Issue 13, items 1 and 4: the win rate against the larger model from the
/// source's starting point, the ratio after/before, and the per-prompt flow
/// of verdict categories from the source (BL) to the last checkpoint (FT).
#[test]
fn larger_section_gives_win_rates_their_ratio_and_the_category_flows() {
    let tmp = tempfile::tempdir().unwrap();
    // The source against the larger model: q1 win, q2..q4 losses, q5 tie.
    let start = judge_artifact(
        &tmp.path().join("start"),
        "source",
        None,
        &[
            ("q1", Some("A")),
            ("q2", Some("B")),
            ("q3", Some("B")),
            ("q4", Some("B")),
            ("q5", Some("0")),
        ],
    );
    let first = judge_artifact(
        &tmp.path().join("c1"),
        "step-2",
        Some(2000.0),
        &[
            ("q1", Some("A")),
            ("q2", Some("A")),
            ("q3", Some("B")),
            ("q4", Some("B")),
            ("q5", Some("0")),
        ],
    );
    // The last checkpoint: q1 win -> tie, q2 loss -> win, q3 loss -> win,
    // q4 loss -> unreadable, q5 tie -> win.
    let last = judge_artifact(
        &tmp.path().join("c2"),
        "step-8",
        Some(8000.0),
        &[
            ("q1", Some("0")),
            ("q2", Some("A")),
            ("q3", Some("A")),
            ("q4", None),
            ("q5", Some("A")),
        ],
    );
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            (
                "larger_judge",
                Value::List(vec![Value::List(vec![first, last])]),
            ),
            ("larger_judge_start", Value::List(vec![start])),
            (
                "larger_series",
                Value::List(vec![Value::Str("0.5B vs 1.5B".into())]),
            ),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Against the larger model"), "{md}");
    // win rates 1/5, 2/5, 3/4; scores 1.5/5, 2.5/5, 3.5/4
    for row in [
        "| 0.5B vs 1.5B | source (start) | – | 0.200 | 0.300 | 1/1/3 |",
        "| 0.5B vs 1.5B | step-2 | 2.0k | 0.400 | 0.500 | 2/1/2 |",
        "| 0.5B vs 1.5B | step-8 | 8.0k | 0.750 | 0.875 | 3/1/0 |",
        // 0.75 / 0.2 = 3.75; 0.875 / 0.3 = 2.92
        "| 0.5B vs 1.5B | 0.200 | 0.750 | 3.75× | 0.300 | 0.875 | 2.92× | step-8 (8.0k tokens) |",
        // BL win -> FT tie; BL tie -> FT win; BL loss -> 2 wins and 1 without verdict
        "| 0.5B vs 1.5B | step-8 | win | 0 | 1 | 0 | 0 |",
        "| 0.5B vs 1.5B | step-8 | tie | 1 | 0 | 0 | 0 |",
        "| 0.5B vs 1.5B | step-8 | loss | 2 | 0 | 0 | 1 |",
    ] {
        assert!(md.contains(row), "missing {row:?}:\n{md}");
    }
    for stem in [
        "win_rate_vs_larger_tokens",
        "win_rate_vs_larger_flops",
        "flow_0_5b_vs_1_5b",
    ] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}");
        assert!(md.contains(&format!("({stem}.png)")), "{stem}");
    }
    assert!(!md.contains("could not discriminate"), "{md}");
    let svg = std::fs::read_to_string(out.join("flow_0_5b_vs_1_5b.svg")).unwrap();
    assert!(
        svg.contains("loss (3)") && svg.contains("win (3)"),
        "category totals label the columns"
    );
}

/// A judge that returns only ties against the larger model is called out
/// (the demo's 135M judge does this).
#[test]
fn larger_section_flags_an_all_tie_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let ties = [("q1", Some("0")), ("q2", Some("0"))];
    let start = judge_artifact(&tmp.path().join("start"), "source", None, &ties);
    let ck = judge_artifact(&tmp.path().join("c1"), "step-2", Some(2000.0), &ties);
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("larger_judge", Value::List(vec![Value::List(vec![ck])])),
            ("larger_judge_start", Value::List(vec![start])),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("**The judge could not discriminate against the larger model"),
        "{md}"
    );
    // Without names, a series is named by the start's pair.
    assert!(
        md.contains("| source vs larger | 0.000 | 0.000 | undefined (starts at 0) |"),
        "{md}"
    );
}

/// Issue 13, item 4: the flow counts join the two runs by prompt id.
#[test]
fn category_flows_join_verdicts_by_prompt_id() {
    let v = |id: &str, w: Option<&str>| crate::artifacts::eval::Verdict {
        id: id.into(),
        model_a: "a".into(),
        model_b: "b".into(),
        winner: w.map(str::to_owned),
        consistent: true,
        a_first: Default::default(),
        b_first: Default::default(),
        checkpoint_a: None,
        checkpoint_b: None,
    };
    let before = [
        v("x", Some("B")),
        v("y", Some("A")),
        v("only-before", Some("A")),
    ];
    let after = [
        v("y", Some("B")),
        v("x", Some("A")),
        v("only-after", Some("0")),
    ];
    let flows = sections::category_flows(&before, &after);
    let mut expected = [[0u64; 4]; 4];
    expected[2][0] = 1; // x: loss -> win
    expected[0][2] = 1; // y: win -> loss
    assert_eq!(flows, expected);
}

/// Issue 13, item 6: held-out loss per checkpoint, the source as the
/// reference.
#[test]
fn heldout_section_lists_the_loss_of_every_model() {
    let tmp = tempfile::tempdir().unwrap();
    let put_loss = |name: &str, loss: f64, ck: Option<Json>| -> Value {
        let d = tmp.path().join(name);
        put(
            &d,
            "heldout_loss.json",
            &json!({"loss": loss, "perplexity": loss.exp(), "tokens": 500, "sequences": 4, "pieces": 6, "model": name, "checkpoint": ck}),
        );
        Value::Path(d)
    };
    let source = put_loss("source", 3.0, None);
    let cpt = Value::List(vec![
        put_loss(
            "c1",
            2.8,
            Some(json!({"step": 4, "tokens_seen": 4096.0, "flops": 1.0e12})),
        ),
        put_loss(
            "c2",
            2.5,
            Some(json!({"step": 8, "tokens_seen": 8192.0, "flops": 2.0e12})),
        ),
    ]);
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("heldout", Value::List(vec![source, cpt])),
            (
                "heldout_series",
                Value::List(vec![Value::Str("source".into()), Value::Str("cpt".into())]),
            ),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Held-out domain loss"), "{md}");
    // perplexity e^3 = 20.09, e^2.5 = 12.18
    assert!(md.contains("| source | – | 3.0000 | 20.09 | 500 |"), "{md}");
    assert!(
        md.contains("| cpt @ step 8 | 8.2k | 2.5000 | 12.18 | 500 |"),
        "{md}"
    );
    for stem in ["heldout_loss_tokens", "heldout_loss_flops"] {
        assert!(is_png(&out.join(format!("{stem}.png"))), "{stem}");
    }
}

/// Issue 13, item 4: each order's verdict is kept and shown as a flow from
/// the A-first verdict to the B-first one, with the combining rule stated.
#[test]
fn judge_section_shows_per_order_flows_and_the_combining_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let jd = tmp.path().join("judge");
    put(
        &jd,
        "judge.json",
        &json!({"model_a": "step-2", "model_b": "source", "wins": 1, "ties": 2, "losses": 0, "unparseable": 1, "inconsistent": 1}),
    );
    // q1: A wins in both orders (first order "A", swapped order "B");
    // q2: A first says A, B first says A (= model b): disagreement;
    // q3: ties in both; q4: unreadable first order.
    let lines = [
        json!({"id": "q1", "model_a": "step-2", "model_b": "source", "a_first": {"winner": "A"}, "b_first": {"winner": "B"}}),
        json!({"id": "q2", "model_a": "step-2", "model_b": "source", "a_first": {"winner": "A"}, "b_first": {"winner": "A"}}),
        json!({"id": "q3", "model_a": "step-2", "model_b": "source", "a_first": {"winner": "0"}, "b_first": {"winner": "0"}}),
        json!({"id": "q4", "model_a": "step-2", "model_b": "source", "a_first": {"winner": null}, "b_first": {"winner": "0"}}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(jd.join("verdicts.jsonl"), text).unwrap();
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[("judge", Value::List(vec![Value::Path(jd)]))],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("they disagree → a tie"), "{md}");
    assert!(
        md.contains("| step-2 vs source | win | 1 | 0 | 1 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| step-2 vs source | tie | 0 | 1 | 0 | 0 |"),
        "{md}"
    );
    assert!(
        md.contains("| step-2 vs source | unreadable | 0 | 1 | 0 | 0 |"),
        "{md}"
    );
}

/// Issue 13, item 5: the curation statistics of 004 Appendix C from the
/// curation ops' outputs, beside the paper's values.
#[test]
fn curation_section_lists_the_pipeline_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("annotate");
    put(
        &a,
        "annotate.json",
        &json!({"n": 40, "labels": {"medizinisch": 15, "allgemein": 25}, "unparseable": 0}),
    );
    let g = tmp.path().join("agree");
    put(
        &g,
        "agreement.json",
        &json!({"compared": 24, "majority": {"f1": 0.9, "precision": 0.95, "recall": 0.857}}),
    );
    let c = tmp.path().join("classifier");
    put(
        &c,
        "classifier.json",
        &json!({"threshold": 0.42, "valid": {"precision": 0.8, "recall": 0.75, "f1": 0.774}}),
    );
    let fl = tmp.path().join("filter");
    put(
        &fl,
        "filter.json",
        &json!({"documents_in": 334, "documents_out": 120}),
    );
    let d = tmp.path().join("dedup");
    put(
        &d,
        "dedup.json",
        &json!({"documents_in": 120, "documents_out": 110, "exact_duplicates": 6, "near_duplicates": 4}),
    );
    let pk = tmp.path().join("pack");
    put(
        &pk,
        "pack.json",
        &json!({"tokens": 51200, "sequences": 400}),
    );
    let list = Value::List([a, g, c, fl, d, pk].into_iter().map(Value::Path).collect());
    let out = tmp.path().join("out");
    run_op(&Report, &[("curation", list)], &out).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Curation"), "{md}");
    for row in [
        "| documents sampled and labelled by the LLM | 40 | 260k",
        "| LLM vs human majority: F1 | 0.900 | 0.911 |",
        "| classifier precision (validation split) | 0.800 | 0.95 (test set) |",
        "| documents kept as medical | 120 | 7.3M |",
        "| documents after deduplication | 110 | 7.3M unique |",
        "| tokens after packing | 51.2k | 9.5B",
        "|   exact duplicates removed | 6 |  |",
        "|   near duplicates removed | 4 |  |",
    ] {
        assert!(md.contains(row), "missing {row:?}:\n{md}");
    }
    // A directory of another kind is an error naming it.
    let err = run_op(
        &Report,
        &[(
            "curation",
            Value::List(vec![Value::Path(tmp.path().join("out"))]),
        )],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("holds none of"), "{err:?}");
}

/// Issue 13, item 1: the source judged against the larger model is the
/// starting point of the curve against it, and the report gives the ratio
/// after adaptation.
#[test]
fn davidson_section_gives_the_starting_point_and_ratio_against_the_larger_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dav = tmp.path().join("vs_larger");
    put(
        &dav,
        "davidson.json",
        &json!({"models": ["larger", "source", "step-2", "step-8"], "baseline": "larger",
            "relative_strength": {"larger": 0.5, "source": 0.055, "step-2": 0.1, "step-8": 0.142},
            "strengths": {}, "score": {}, "tie": 0.5, "comparisons": 60,
            "checkpoints": {"step-2": {"tokens_seen": 1.0e9}, "step-8": {"tokens_seen": 4.0e9}},
            "counts": {"source": {"wins": 1, "ties": 2, "losses": 17}}}),
    );
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[("davidson", Value::List(vec![Value::Path(dav)]))],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // 0.142 / 0.055 = 2.58
    assert!(md.contains("Against larger: source starts at 0.055; the last checkpoint (step-8, 4.0B tokens) reaches 0.142, 2.58× the starting value"), "{md}");
}

/// Issue 13, item 5: 002's average-accuracy table: the mean over the
/// benchmarks one model (and checkpoint) was scored on.
#[test]
fn mcqa_section_averages_benchmarks_per_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mut mcqa = Vec::new();
    let mut series = Vec::new();
    for (fmt, acc, name) in [
        ("mmlux", 0.40, "MMLU-X source"),
        ("medqa", 0.30, "MedQA source"),
    ] {
        let d = tmp.path().join(name.replace(' ', "_"));
        let mut r = mcqa_result(acc, "/store/source", None);
        r["format"] = json!(fmt);
        put(&d, "mcqa.json", &r);
        mcqa.push(Value::Path(d));
        series.push(Value::Str(name.into()));
    }
    let out = tmp.path().join("out");
    run_op(
        &Report,
        &[
            ("mcqa", Value::List(mcqa)),
            ("mcqa_series", Value::List(series)),
        ],
        &out,
    )
    .unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| MMLU-X source / MedQA source | – | medqa, mmlux | 35.00 |"),
        "{md}"
    );
}
