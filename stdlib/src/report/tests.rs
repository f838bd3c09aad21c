use super::*;
use crate::op::testing::run_op;
use serde_json::json;

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
        checkpoint,
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
    for stem in ["gain_tokens", "gain_flops"] {
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
