use super::eval::RelativeGainResult;
use super::*;

/// A `relative_gain.json` as the op wrote it before it was typed
/// (`serde_json::to_string_pretty` of its `json!` value, no final newline).
const RELATIVE_GAIN: &str = r#"{
  "metric": "acc",
  "baseline": {
    "source": "/store/base",
    "acc": 0.4,
    "checkpoint": null
  },
  "scores": [
    {
      "source": "/store/ck",
      "acc": 0.5,
      "g_rel": 1.25,
      "checkpoint": {
        "tokens_seen": 100
      }
    },
    {
      "source": "0.2",
      "acc": 0.2,
      "g_rel": 0.5,
      "checkpoint": null
    }
  ]
}"#;

#[test]
fn relative_gain_json_reads_and_writes_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("relative_gain.json"), RELATIVE_GAIN).unwrap();
    let doc = RelativeGainResult::read(dir.path()).unwrap();
    assert_eq!(doc.scores[0].g_rel, Some(1.25));
    assert_eq!(doc.baseline.acc, Some(0.4));
    assert_eq!(
        String::from_utf8(doc.to_bytes().unwrap()).unwrap(),
        RELATIVE_GAIN
    );
}

#[test]
fn ordered_map_keeps_the_file_order() {
    let text = r#"{"z":1,"a":2,"m":3}"#;
    let map: OrderedMap<u32> = serde_json::from_str(text).unwrap();
    assert_eq!(map.get("a"), Some(&2));
    assert_eq!(serde_json::to_string(&map).unwrap(), text);
}

/// `filter.json` as the op wrote it before its counts were one struct
/// (flattened back in place: the same keys in the same order), compact.
const FILTER: &str = concat!(
    r#"{"threshold":0.5,"keep":"positive","positive":"med","documents_in":3,"documents_out":1,"#,
    r#""tokens_in":30,"tokens_out":12,"chars_in":300,"chars_out":120,"errors":0,"per_shard":["#,
    r#"{"file":"docs-00000.jsonl.zst","documents_in":3,"documents_out":1,"tokens_in":30,"#,
    r#""tokens_out":12,"chars_in":300,"chars_out":120,"score_histogram":[1,0,0,0,0,1,0,0,0,1],"#,
    r#""errors":{"count":0,"examples":[]}}]}"#
);

#[test]
fn filter_json_reads_and_writes_back_in_its_field_order() {
    use super::data::FilterStats;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("filter.json"), FILTER).unwrap();
    let doc = FilterStats::read(dir.path()).unwrap();
    assert_eq!(doc.counts.tokens_out, 12);
    assert_eq!(doc.per_shard[0].counts.chars_in, 300);
    assert_eq!(serde_json::to_string(&doc).unwrap(), FILTER);
}

/// `losses.jsonl` as the training loop wrote it with `json!` before it was
/// typed (cpt.rs's test run: three steps).
const LOSSES: &str = concat!(
    r#"{"step":1,"loss":5.976728572040138,"lr":0.0,"grad_norm":4.892575832984887,"tokens_seen":18}"#,
    "\n",
    r#"{"step":2,"loss":5.943305992159572,"lr":0.001,"grad_norm":5.276598034547328,"tokens_seen":36}"#,
    "\n",
    r#"{"step":3,"loss":6.12471999523928,"lr":0.0005,"grad_norm":5.868409875836157,"tokens_seen":54}"#,
    "\n",
);

#[test]
fn losses_jsonl_reads_and_writes_back_byte_for_byte() {
    use super::train::LossLine;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("losses.jsonl"), LOSSES).unwrap();
    let lines = LossLine::read_all(dir.path()).unwrap();
    assert_eq!(lines.len(), 3);
    assert_eq!((lines[1].step, lines[1].lr), (Some(2), Some(0.001)));
    assert_eq!(lines[2].tokens_seen, Some(54));
    assert_eq!(LossLine::to_text(&lines).unwrap(), LOSSES);
    let bad = format!("{LOSSES}{{\"step\": \"four\"}}\n");
    std::fs::write(dir.path().join("losses.jsonl"), bad).unwrap();
    let e = LossLine::read_all(dir.path()).unwrap_err().to_string();
    assert!(e.contains("losses.jsonl:4: not a losses line"), "{e}");
}

/// The encoder classifier's `train_log.jsonl` as `train_classifier` wrote
/// it with `json!` before it was typed (its first three steps in
/// train_classifier's encoder test).
const TRAIN_LOG: &str = concat!(
    r#"{"step":1,"epoch":1,"loss":0.7342300191521645,"lr":0.0,"grad_norm":1.0446675079757992}"#,
    "\n",
    r#"{"step":2,"epoch":1,"loss":0.7228360325098038,"lr":0.0008333333333333333,"grad_norm":0.7666736629696268}"#,
    "\n",
    r#"{"step":3,"epoch":1,"loss":0.7034163177013397,"lr":0.0016666666666666666,"grad_norm":0.852727921194996}"#,
    "\n",
);

#[test]
fn train_log_jsonl_reads_and_writes_back_byte_for_byte() {
    use crate::data::train_classifier::TrainLogLine;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("train_log.jsonl"), TRAIN_LOG).unwrap();
    let lines = TrainLogLine::read_all(dir.path()).unwrap();
    assert_eq!((lines[2].step, lines[2].epoch), (3, 1));
    assert_eq!(lines[0].loss, Some(0.7342300191521645));
    assert_eq!(TrainLogLine::to_text(&lines).unwrap(), TRAIN_LOG);
    // A non-finite loss or norm: `null`, as `json!` wrote it.
    let line = TrainLogLine {
        step: 4,
        epoch: 2,
        loss: finite(f64::NAN),
        lr: 1e-3,
        grad_norm: finite(f64::INFINITY),
    };
    let old = serde_json::json!({"step": 4u64, "epoch": 2u32, "loss": f64::NAN, "lr": 1e-3, "grad_norm": f64::INFINITY});
    assert_eq!(line.to_line().unwrap(), old.to_string());
}

/// `failure_modes.jsonl` as `failure_modes` wrote it with `json!` before it
/// was typed (the op's test in eval/failure_modes.rs, which checks the op
/// still writes exactly this).
pub(crate) const FAILURE_MODES_LINES: &str = concat!(
    r#"{"id":"1","words":21,"foreign_words":9,"foreign_share":0.42857142857142855,"longest_foreign_span":9,"#,
    r#""foreign_languages":["eng"],"mixed":true,"length":30.0,"length_ratio":1.5,"repetition":0.0,"#,
    r#""repetitive":false,"truncated":false}"#,
    "\n",
    r#"{"id":"2","words":6,"foreign_words":0,"foreign_share":0.0,"longest_foreign_span":0,"#,
    r#""foreign_languages":[],"mixed":false,"length":60.0,"length_ratio":3.0,"repetition":0.75,"#,
    r#""repetitive":true,"truncated":true}"#,
    "\n",
);

#[test]
fn failure_modes_jsonl_reads_and_writes_back_byte_for_byte() {
    use super::eval::FailureModesLine;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("failure_modes.jsonl"), FAILURE_MODES_LINES).unwrap();
    let lines = FailureModesLine::read_all(dir.path()).unwrap();
    assert_eq!(lines[0].foreign_languages, ["eng"]);
    assert_eq!(
        (lines[1].length_ratio, lines[1].truncated),
        (Some(3.0), true)
    );
    assert_eq!(
        FailureModesLine::to_text(&lines).unwrap(),
        FAILURE_MODES_LINES
    );
}
