use super::testutil::*;
use super::*;
use crate::artifacts::data::CorpusStats;
use crate::artifacts::JsonFile;

fn demo_jsonl_lines() -> Vec<Json> {
    std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn glob_matching_rules() {
    let m = |p: &str, t: &str| InputPattern::new(p).unwrap().matches(Path::new(t));
    assert!(m("*.parquet", "a.parquet"));
    assert!(m("*.parquet", "deep/down/a.parquet")); // no `/`: the file name
    assert!(!m("*.parquet", "a.parquet.tmp"));
    assert!(m("*.{parquet,jsonl.gz}", "x.jsonl.gz"));
    assert!(m("**/*.jsonl", "deu_Latn/train/x.jsonl"));
    assert!(m("**/*.jsonl", "x.jsonl"));
    assert!(!m("*/x.jsonl", "a/b/x.jsonl"));
    assert!(m("shard-??.jsonl", "shard-07.jsonl"));
    let e = InputPattern::new("*.{parquet").err().unwrap().to_string();
    assert!(e.contains("not a valid glob"), "{e}");
}

#[test]
fn corpus_reads_jsonl_and_parquet_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    run_op(
        &Corpus,
        &[("input", Value::Path(demo_dir().join("fineweb2-demo.jsonl")))],
        &a,
    )
    .unwrap();
    run_op(
        &Corpus,
        &[(
            "input",
            Value::Path(demo_dir().join("fineweb2-demo.parquet")),
        )],
        &b,
    )
    .unwrap();
    let from_jsonl = read_corpus(&a);
    let from_parquet = read_corpus(&b);
    let source = demo_jsonl_lines();
    assert_eq!(from_jsonl.len(), source.len());
    assert_eq!(from_parquet.len(), source.len());
    for ((j, p), s) in from_jsonl.iter().zip(&from_parquet).zip(&source) {
        assert_eq!(j["id"], s["id"]);
        assert_eq!(j["text"], s["text"]);
        assert_eq!(p["id"], s["id"]);
        assert_eq!(p["text"], s["text"]);
        assert_eq!(p["url"], s["url"]);
        assert_eq!(p["language_score"], s["language_score"]);
    }
    let stats = CorpusStats::read(&b).unwrap();
    assert_eq!(stats.documents, source.len() as u64);
    assert_eq!(stats.sources[0].format, "parquet");
}

#[test]
fn corpus_reads_compressed_jsonl_from_a_directory_glob_and_shards_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src/deu_Latn");
    std::fs::create_dir_all(&src).unwrap();
    let lines: Vec<String> = std::fs::read_to_string(demo_dir().join("fineweb2-demo.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let (first, second) = lines.split_at(100);
    let mut gz = flate2::write::GzEncoder::new(
        File::create(src.join("p0.jsonl.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all((first.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap();
    std::fs::write(
        src.join("p1.jsonl.zst"),
        zstd::encode_all((second.join("\n") + "\n").as_bytes(), 3).unwrap(),
    )
    .unwrap();
    std::fs::write(src.join("notes.txt"), "not a shard").unwrap();
    let out = tmp.path().join("out");
    run_op(
        &Corpus,
        &[
            ("input", Value::Path(tmp.path().join("src"))),
            ("pattern", Value::Str("**/*.jsonl.*".into())),
            ("docs_per_shard", Value::Int(100)),
        ],
        &out,
    )
    .unwrap();
    let docs = read_corpus(&out);
    assert_eq!(docs.len(), lines.len());
    let shards = corpus_shards(&out).unwrap();
    assert_eq!(shards.len(), lines.len().div_ceil(100));
}

#[test]
fn corpus_reports_malformed_lines_and_empty_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"id\":\"a\",\"text\":\"Hallo Welt\"}\n{not json\n{\"id\":\"c\"}\n[1,2]\n{\"id\":\"e\",\"text\":\"Noch ein Text\"}\n").unwrap();
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let files = Value::List(vec![Value::Path(bad.clone()), Value::Path(empty)]);
    let err = run_op(
        &Corpus,
        &[
            ("input", files.clone()),
            ("on_error", Value::Str("fail".into())),
        ],
        &tmp.path().join("o1"),
    )
    .unwrap_err();
    let msg = format!("{err:?}");
    assert!(msg.contains("bad.jsonl:2"), "{msg}");
    let out = tmp.path().join("o2");
    run_op(&Corpus, &[("input", files)], &out).unwrap();
    let stats = CorpusStats::read(&out).unwrap();
    assert_eq!(stats.documents, 2);
    assert_eq!(stats.errors.count, 3);
    let examples = &stats.errors.examples;
    assert!(examples[0].contains("bad.jsonl:2: malformed JSON"));
    assert!(examples[1].contains("bad.jsonl:3: no `text` field"));
    assert!(examples[2].contains("bad.jsonl:4"));
    assert_eq!(stats.sources[1].documents, 0);
}

#[test]
fn corpus_reports_parquet_without_text_column() {
    use parquet::data_type::ByteArray;
    use parquet::file::writer::SerializedFileWriter;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("no_text.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type("message s { REQUIRED BYTE_ARRAY id (UTF8); }")
            .unwrap(),
    );
    let mut w = SerializedFileWriter::new(File::create(&path).unwrap(), schema, Default::default())
        .unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<parquet::data_type::ByteArrayType>()
        .write_batch(&[ByteArray::from("x1")], None, None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let err = run_op(
        &Corpus,
        &[
            ("input", Value::Path(path.clone())),
            ("on_error", Value::Str("fail".into())),
        ],
        &tmp.path().join("o"),
    )
    .unwrap_err();
    let msg = format!("{err:?}");
    assert!(
        msg.contains("no_text.parquet")
            && msg.contains("no `text` column")
            && msg.contains("columns: id"),
        "{msg}"
    );
    // skipping leaves nothing: the op says so instead of writing an empty corpus
    let err = run_op(
        &Corpus,
        &[("input", Value::Path(path))],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("no documents"));
}

/// Adversarial run, issue 12 item 8: one corrupt page made the reader
/// stop at the first bad row, dropping the rest of the file with exit 0.
/// Now only the rest of that row group is lost, and counted.
#[test]
fn a_corrupt_parquet_page_costs_only_its_row_group_and_is_counted() {
    use parquet::basic::{Compression, Encoding};
    use parquet::data_type::ByteArray;
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("three_groups.parquet");
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message s { REQUIRED BYTE_ARRAY text (UTF8); }",
        )
        .unwrap(),
    );
    // Plain, uncompressed pages: each value is a 4-byte length and its bytes.
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_encoding(Encoding::PLAIN)
        .build();
    let mut w =
        SerializedFileWriter::new(File::create(&path).unwrap(), schema, Arc::new(props)).unwrap();
    for g in 0..3 {
        let docs: Vec<ByteArray> = (0..10)
            .map(|i| ByteArray::from(format!("Dokument {g}-{i:02} über Anatomie").as_str()))
            .collect();
        let mut rg = w.next_row_group().unwrap();
        let mut col = rg.next_column().unwrap().unwrap();
        col.typed::<parquet::data_type::ByteArrayType>()
            .write_batch(&docs, None, None)
            .unwrap();
        col.close().unwrap();
        rg.close().unwrap();
    }
    w.close().unwrap();
    // Break the length of the fourth value of the middle row group.
    let mut bytes = std::fs::read(&path).unwrap();
    let marker = "Dokument 1-03".as_bytes();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .unwrap();
    bytes[at - 4..at].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let out = tmp.path().join("o");
    run_op(&Corpus, &[("input", Value::Path(path.clone()))], &out).unwrap();
    let texts: Vec<String> = read_corpus(&out)
        .iter()
        .map(|d| d["text"].as_str().unwrap().to_string())
        .collect();
    // Row groups 0 and 2 whole; of row group 1 at most the rows before the break.
    assert!(
        texts
            .iter()
            .filter(|t| t.starts_with("Dokument 0-"))
            .count()
            == 10
    );
    assert!(
        texts
            .iter()
            .filter(|t| t.starts_with("Dokument 2-"))
            .count()
            == 10
    );
    let kept_of_1 = texts
        .iter()
        .filter(|t| t.starts_with("Dokument 1-"))
        .count() as u64;
    let stats = CorpusStats::read(&out).unwrap();
    assert_eq!(stats.documents, texts.len() as u64);
    // Every document is either kept or counted as lost.
    assert_eq!(stats.documents_lost + kept_of_1, 10, "{stats:?}");
    assert_eq!(stats.errors.count, 1, "{stats:?}");
    let example = &stats.errors.examples[0];
    assert!(
        example.contains("three_groups.parquet") && example.contains("row group 1"),
        "{example}"
    );

    // Under on_error: "fail" the same file fails, naming the row group.
    let err = run_op(
        &Corpus,
        &[
            ("input", Value::Path(path)),
            ("on_error", Value::Str("fail".into())),
        ],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(format!("{err:?}").contains("row group 1"), "{err:?}");
}

/// Issue 12 item 8: a truncated `.gz` or `.zst` under on_error "skip"
/// keeps what was read and says where it broke off; a UTF-8 BOM does
/// not cost the first document.
#[test]
fn truncated_streams_keep_what_was_read_and_a_bom_costs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: String = (0..20000)
        .map(|i| {
            format!(
                "{{\"id\": \"d{i}\", \"text\": \"Text {i}: Blutdruck und Herzfrequenz {}\"}}\n",
                i * 7919 % 1000
            )
        })
        .collect();
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(lines.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let zst = zstd::encode_all(lines.as_bytes(), 3).unwrap();
    for (name, whole) in [("a.jsonl.gz", gz), ("a.jsonl.zst", zst)] {
        let path = tmp.path().join(name);
        std::fs::write(&path, &whole[..whole.len() * 2 / 3]).unwrap();
        let out = tmp.path().join(format!("o-{name}"));
        run_op(&Corpus, &[("input", Value::Path(path))], &out).unwrap();
        let docs = read_corpus(&out);
        let stats = CorpusStats::read(&out).unwrap();
        assert!(
            docs.len() > 1000 && docs.len() < 20000,
            "{name}: {} documents",
            docs.len()
        );
        // What was kept is a prefix of the file, in order.
        for (i, d) in docs.iter().enumerate() {
            assert_eq!(d["id"], format!("d{i}"), "{name}");
        }
        let written = std::fs::read(out.join("corpus.json")).unwrap();
        assert_eq!(stats.to_bytes().unwrap(), written, "{name}");
        let broke = stats.sources[0].broken_off.as_deref().unwrap();
        assert!(
            broke.contains(name) && broke.contains("breaks off"),
            "{name}: {broke}"
        );
        assert_eq!(stats.broken_off_files, 1);
    }
    let path = tmp.path().join("bom.jsonl");
    std::fs::write(
        &path,
        format!("\u{feff}{}", &lines[..lines.find('\n').unwrap() + 1]),
    )
    .unwrap();
    let out = tmp.path().join("o-bom");
    run_op(&Corpus, &[("input", Value::Path(path))], &out).unwrap();
    let docs = read_corpus(&out);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["id"], "d0");
}

/// Five JSONL files under `dir`: a malformed line, an id that repeats one
/// of an earlier file, an empty text, an empty file, documents without
/// ids.
fn five_sources(dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let doc =
        |id: &str, text: &str| serde_json::json!({"id": id, "text": text, "url": "u"}).to_string();
    let files = [
        vec![
            doc("a1", "eins"),
            "{broken".into(),
            doc("a2", "zwei"),
            doc("a3", "drei"),
        ],
        vec![
            doc("b1", "vier"),
            doc("a2", "zwei wieder"),
            doc("b2", "fünf"),
        ],
        vec![doc("c0", "  "), doc("c1", "sechs")],
        vec![],
        (0..4)
            .map(|i| serde_json::json!({"text": format!("ohne id {i}")}).to_string())
            .collect(),
    ];
    files
        .iter()
        .enumerate()
        .map(|(i, lines)| {
            let path = dir.join(format!("f{i}.jsonl"));
            let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

#[test]
fn corpus_writes_the_same_bytes_for_any_number_of_shard_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let files = five_sources(&tmp.path().join("in"));
    let params = [
        ("input", Value::Path(tmp.path().join("in"))),
        ("docs_per_shard", Value::Int(3)),
    ];
    let out =
        assert_same_bytes_for_task_counts(&Corpus, &params, &tmp.path().join("c"), &[2, 3, 5, 64]);
    // what one reader of the five files keeps: the first `a2` only, no
    // empty text, file:line ids where a record has none; shards of 3
    // across the file boundaries
    let f4 = files[4].display().to_string();
    let mut expected: Vec<String> = ["a1", "a2", "a3", "b1", "b2", "c1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    expected.extend((1..=4).map(|l| format!("{f4}:{l}")));
    let ids: Vec<String> = read_corpus(&out)
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(corpus_shards(&out).unwrap().len(), 4);
    let stats = CorpusStats::read(&out).unwrap();
    // the struct holds every byte of the file
    let written = std::fs::read(out.join("corpus.json")).unwrap();
    assert_eq!(stats.to_bytes().unwrap(), written);
    assert_eq!(stats.documents, 10);
    assert_eq!(stats.duplicate_ids, 1);
    assert_eq!(stats.empty_text, 1);
    assert_eq!(stats.errors.count, 2);
    let examples = &stats.errors.examples;
    assert!(examples[0].starts_with(&format!("{}:2: malformed JSON", files[0].display())));
    assert_eq!(
        examples[1],
        format!("{}:2: duplicate id \"a2\"", files[1].display())
    );
    let per_file: Vec<u64> = stats.sources.iter().map(|s| s.documents).collect();
    assert_eq!(per_file, [3, 2, 1, 0, 4]);
}

#[test]
fn a_failing_shard_task_fails_corpus_with_its_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, text) in [
        "{\"id\":\"a\",\"text\":\"x\"}\n",
        "{\"id\":\"b\",\"text\":\"y\"}\n",
        "{\"id\":\"c\",\"text\":\"z\"}\nnot json\n",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(dir.join(format!("f{i}.jsonl")), text).unwrap();
    }
    let out = tmp.path().join("o");
    let err = run_sharded(
        &Corpus,
        &[
            ("input", Value::Path(dir.clone())),
            ("on_error", Value::Str("fail".into())),
        ],
        &out,
        3,
    )
    .unwrap_err();
    let location = format!("{}:2", dir.join("f2.jsonl").display());
    assert_third_shard_task_failed(&err, &location, &out, "corpus.json");
}

/// Writes a parquet file of `groups` row groups with the columns `id`
/// (required), `text`, `n`, `score` (optional; `None` is a null).
#[allow(clippy::type_complexity)]
fn write_parquet_groups(
    path: &Path,
    groups: &[Vec<(&str, Option<&str>, Option<i64>, Option<f64>)>],
) {
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::writer::SerializedFileWriter;
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message s { REQUIRED BYTE_ARRAY id (UTF8); OPTIONAL BYTE_ARRAY text (UTF8); OPTIONAL INT64 n; OPTIONAL DOUBLE score; }",
        )
        .unwrap(),
    );
    let mut w =
        SerializedFileWriter::new(File::create(path).unwrap(), schema, Default::default()).unwrap();
    for rows in groups {
        let mut rg = w.next_row_group().unwrap();
        let ids: Vec<ByteArray> = rows.iter().map(|r| ByteArray::from(r.0)).collect();
        write_column::<ByteArrayType>(&mut rg, &ids, None);
        let texts: Vec<ByteArray> = rows
            .iter()
            .filter_map(|r| r.1.map(ByteArray::from))
            .collect();
        write_column::<ByteArrayType>(
            &mut rg,
            &texts,
            Some(rows.iter().map(|r| r.1.is_some()).collect()),
        );
        let ns: Vec<i64> = rows.iter().filter_map(|r| r.2).collect();
        write_column::<Int64Type>(
            &mut rg,
            &ns,
            Some(rows.iter().map(|r| r.2.is_some()).collect()),
        );
        let scores: Vec<f64> = rows.iter().filter_map(|r| r.3).collect();
        write_column::<DoubleType>(
            &mut rg,
            &scores,
            Some(rows.iter().map(|r| r.3.is_some()).collect()),
        );
        rg.close().unwrap();
    }
    w.close().unwrap();
}

/// Writes the next column of a row group: `values` (the non-null ones) and,
/// for an optional column, which rows have one.
fn write_column<T: parquet::data_type::DataType>(
    rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, File>,
    values: &[T::T],
    present: Option<Vec<bool>>,
) {
    let defs: Option<Vec<i16>> = present.map(|p| p.into_iter().map(i16::from).collect());
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<T>()
        .write_batch(values, defs.as_deref(), None)
        .unwrap();
    col.close().unwrap();
}

/// The decompressed bytes of a corpus artifact's shards, in order.
fn corpus_text(dir: &Path) -> String {
    corpus_shards(dir)
        .unwrap()
        .iter()
        .map(|s| {
            String::from_utf8(zstd::decode_all(&std::fs::read(s).unwrap()[..]).unwrap()).unwrap()
        })
        .collect()
}

/// Issue 11 item 6: the record-batch reader over several row groups, one
/// larger than a record batch, with null values: a null text is a bad
/// record (counted, named by its row), other nulls are kept as null.
#[test]
fn parquet_row_groups_and_nulls_give_these_records() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("groups.parquet");
    let big: Vec<String> = (0..1500).map(|i| format!("Befund Nummer {i}")).collect();
    let big_ids: Vec<String> = (0..1500).map(|i| format!("m{i}")).collect();
    let groups = vec![
        vec![
            ("a", Some("Fieber und Husten"), Some(3), Some(0.25)),
            ("b", Some("Blutdruck \"hoch\""), None, Some(-1.5)),
        ],
        big.iter()
            .zip(&big_ids)
            .enumerate()
            .map(|(i, (t, id))| (id.as_str(), Some(t.as_str()), Some(i as i64), None))
            .collect(),
        vec![
            ("x", None, Some(7), Some(1.0)),
            ("y", Some("Übelkeit"), Some(-2), Some(0.125)),
        ],
    ];
    write_parquet_groups(&path, &groups);
    let out = tmp.path().join("o");
    run_op(&Corpus, &[("input", Value::Path(path.clone()))], &out).unwrap();
    let mut expected = String::from(
        "{\"id\":\"a\",\"text\":\"Fieber und Husten\",\"n\":3,\"score\":0.25}\n\
         {\"id\":\"b\",\"text\":\"Blutdruck \\\"hoch\\\"\",\"n\":null,\"score\":-1.5}\n",
    );
    for i in 0..1500 {
        expected += &format!(
            "{{\"id\":\"m{i}\",\"text\":\"Befund Nummer {i}\",\"n\":{i},\"score\":null}}\n"
        );
    }
    expected += "{\"id\":\"y\",\"text\":\"Übelkeit\",\"n\":-2,\"score\":0.125}\n";
    assert_eq!(corpus_text(&out), expected);
    let stats = CorpusStats::read(&out).unwrap();
    assert_eq!(stats.documents, 1503);
    assert_eq!(stats.documents_lost, 0);
    assert_eq!(stats.errors.count, 1);
    assert_eq!(
        stats.errors.examples[0],
        format!("{}:row 1503: no `text` field", path.display())
    );
}

/// Mutated parquet files (bytes overwritten, runs cut out, the file cut
/// short) are read or reported, never a panic; what is lost is counted.
#[test]
fn mutated_parquet_files_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_file = tmp.path().join("seed.parquet");
    let rows: Vec<String> = (0..300)
        .map(|i| format!("Dokument {i} über Anatomie"))
        .collect();
    let ids: Vec<String> = (0..300).map(|i| format!("d{i}")).collect();
    let groups: Vec<Vec<_>> = rows
        .chunks(100)
        .zip(ids.chunks(100))
        .map(|(t, d)| {
            t.iter()
                .zip(d)
                .map(|(t, d)| (d.as_str(), Some(t.as_str()), Some(1), Some(0.5)))
                .collect()
        })
        .collect();
    write_parquet_groups(&seed_file, &groups);
    let seeds = [
        std::fs::read(&seed_file).unwrap(),
        std::fs::read(demo_dir().join("fineweb2-demo.parquet")).unwrap(),
    ];
    let mut state = 0x5eed_u64;
    let mut next = move |n: usize| {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
    };
    let path = tmp.path().join("m.parquet");
    for case in 0..200 {
        let mut bytes = seeds[case % 2].clone();
        for _ in 0..1 + next(4) {
            let at = next(bytes.len());
            match next(3) {
                0 => {
                    for b in bytes.iter_mut().skip(at).take(1 + next(8)) {
                        *b = next(256) as u8;
                    }
                }
                1 => {
                    let end = (at + 1 + next(64)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => bytes.truncate(at.max(8)),
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let out = tmp.path().join(format!("o{case}"));
        let outcome = std::panic::catch_unwind(|| {
            run_op(&Corpus, &[("input", Value::Path(path.clone()))], &out)
        });
        assert!(outcome.is_ok(), "case {case} panicked");
        let _ = std::fs::remove_dir_all(&out);
    }
}
