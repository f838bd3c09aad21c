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
