use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::loss::{document_pieces, HeldoutLoss};
use super::split::{split_key, Holdout};
use crate::data::corpus::testutil::{read_corpus, write_corpus_shards};
use crate::op::testing::run_op;
use crate::op::Value;

fn corpus_lines(ids: std::ops::Range<usize>) -> String {
    ids.map(|i| format!("{}\n", serde_json::json!({"id": format!("d{i}"), "text": format!("Dokument {i} über Therapie"), "url": i})))
        .collect()
}

fn ids(docs: &[Json]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Issue 13, item 6: the held-out split is deterministic, disjoint, covers
/// every document with its whole record, holds round(fraction · n) of
/// them, and does not depend on how the corpus is sharded.
#[test]
fn holdout_splits_by_key_independent_of_sharding() {
    let tmp = tempfile::tempdir().unwrap();
    let one = write_corpus_shards(&tmp.path().join("one"), &[&corpus_lines(0..40)]);
    let three = write_corpus_shards(
        &tmp.path().join("three"),
        &[
            &corpus_lines(25..40),
            &corpus_lines(0..10),
            &corpus_lines(10..25),
        ],
    );
    let run = |corpus: &Path, out: &str| -> PathBuf {
        let out = tmp.path().join(out);
        run_op(
            &Holdout,
            &[
                ("corpus", Value::Path(corpus.to_path_buf())),
                ("fraction", Value::Float(0.1)),
            ],
            &out,
        )
        .unwrap();
        out
    };
    let a = run(&one, "a");
    let b = run(&three, "b");
    let (train, held) = (
        read_corpus(&a.join("train")),
        read_corpus(&a.join("heldout")),
    );
    assert_eq!(held.len(), 4, "round(0.1 × 40)");
    assert_eq!(train.len(), 36);
    let (train_ids, held_ids) = (ids(&train), ids(&held));
    assert!(train_ids.is_disjoint(&held_ids));
    assert_eq!(train_ids.len() + held_ids.len(), 40);
    assert_eq!(
        held_ids,
        ids(&read_corpus(&b.join("heldout"))),
        "sharding changes nothing"
    );
    // The held-out documents are the 4 smallest keys, computed here from the rule.
    let mut keys: Vec<([u8; 32], String)> = (0..40)
        .map(|i| {
            let (id, text) = (format!("d{i}"), format!("Dokument {i} über Therapie"));
            (split_key(0, &id, &text), id)
        })
        .collect();
    keys.sort();
    let expected: BTreeSet<String> = keys[..4].iter().map(|k| k.1.clone()).collect();
    assert_eq!(held_ids, expected);
    // Records are copied whole.
    assert!(held.iter().all(|d| d["url"].is_number()), "{held:?}");
    let stats: Json =
        serde_json::from_str(&std::fs::read_to_string(a.join("holdout.json")).unwrap()).unwrap();
    assert_eq!(
        (
            stats["documents"].as_u64(),
            stats["heldout_documents"].as_u64()
        ),
        (Some(40), Some(4))
    );
}

#[test]
fn holdout_rejects_a_split_that_leaves_nothing_to_train_on() {
    let tmp = tempfile::tempdir().unwrap();
    let one = write_corpus_shards(&tmp.path().join("one"), &[&corpus_lines(0..1)]);
    let err = run_op(
        &Holdout,
        &[("corpus", Value::Path(one.clone()))],
        &tmp.path().join("o"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("none left to train on"), "{err}");
    let err = run_op(
        &Holdout,
        &[
            ("corpus", Value::Path(one)),
            ("fraction", Value::Float(0.0)),
        ],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("parameter `fraction`"), "{err}");
}

#[test]
fn document_pieces_follow_the_packed_targets() {
    let m = u32::MAX;
    // doc 0 (3 tokens), doc 1 (1 token: nothing to predict), doc 2 (2), padding.
    let tokens = [5, 6, 7, 8, 9, 10, 0, 0];
    let docs = [0, 0, 0, 1, 2, 2, m, m];
    assert_eq!(
        document_pieces(&tokens, &docs),
        vec![vec![5, 6, 7], vec![9, 10]]
    );
}

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/golden")
        .join(name)
}

fn write_packed(dir: &Path, tokens: &[u32], doc_ids: &[u32], seq_len: usize, tokenizer_hash: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let bytes = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::fs::write(dir.join("tokens.bin"), bytes(tokens)).unwrap();
    std::fs::write(dir.join("doc_ids.bin"), bytes(doc_ids)).unwrap();
    let meta = serde_json::json!({"seq_len": seq_len, "sequences": tokens.len() / seq_len, "tokens": 0, "documents": 0,
        "eos_id": 2, "pad_id": 0, "tokenizer_hash": tokenizer_hash});
    std::fs::write(dir.join("pack.json"), meta.to_string()).unwrap();
}

/// The held-out loss is −mean log p over every predicted token of every
/// document piece; the reference scores each piece with a full forward pass
/// (`token_logprobs`), not the op's cached continuation scoring.
#[test]
fn heldout_loss_is_the_mean_next_token_loss_of_the_document_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let m = u32::MAX;
    let seq_len = 8;
    let tokens: Vec<u32> = vec![
        11, 57, 203, 9, 40, 41, 42, 43, // doc 0 (4 tokens), doc 1 (4, cut)
        44, 45, 120, 121, 122, 0, 0, 0, // doc 0 (the cut doc's rest, 2), doc 1 (3), padding
    ];
    let doc_ids: Vec<u32> = vec![0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, m, m, m];
    let data = tmp.path().join("packed");
    write_packed(&data, &tokens, &doc_ids, seq_len, "");
    let out = tmp.path().join("out");
    run_op(
        &HeldoutLoss,
        &[
            ("model", Value::Path(golden("llama"))),
            ("data", Value::Path(data.clone())),
        ],
        &out,
    )
    .unwrap();
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("heldout_loss.json")).unwrap())
            .unwrap();

    let model = flow_model::Model::load(&golden("llama")).unwrap();
    let pieces: [&[u32]; 4] = [
        &[11, 57, 203, 9],
        &[40, 41, 42, 43],
        &[44, 45],
        &[120, 121, 122],
    ];
    let (mut sum, mut n) = (0.0f64, 0usize);
    for p in pieces {
        for lp in model.token_logprobs(p, 0).into_iter().skip(1) {
            sum += lp.unwrap().logprob as f64;
            n += 1;
        }
    }
    assert_eq!(n, 3 + 3 + 1 + 2);
    assert_eq!(doc["tokens"], n);
    assert_eq!(doc["pieces"], 4);
    assert_eq!(doc["sequences"], 2);
    let loss = doc["loss"].as_f64().unwrap();
    assert!(
        (loss - (-sum / n as f64)).abs() < 1e-4,
        "{loss} vs {}",
        -sum / n as f64
    );
    assert!((doc["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9);

    // Packed with another tokenizer: an error that says what to do.
    let other = tmp.path().join("other");
    write_packed(&other, &tokens, &doc_ids, seq_len, "0123abcd");
    let err = run_op(
        &HeldoutLoss,
        &[
            ("model", Value::Path(golden("llama"))),
            ("data", Value::Path(other)),
        ],
        &tmp.path().join("o2"),
    )
    .unwrap_err();
    assert!(
        format!("{err:?}").contains("packed with another tokenizer"),
        "{err:?}"
    );
}
