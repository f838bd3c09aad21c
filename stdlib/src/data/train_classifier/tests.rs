//! Tests of train_classifier.

use std::path::Path;

use super::super::agreement::{majority, read_labels};
use super::super::corpus::testutil::*;
use super::*;

#[test]
fn features_follow_the_hashing_rules() {
    let f = NgramFeatures {
        buckets: 1 << 20,
        word_ngrams: 2,
        char_min: 3,
        char_max: 5,
    };
    let mut a = Vec::new();
    f.for_each("Herz", |b| a.push(b));
    // one word: 1 unigram; "<herz>" has 6 bytes: 4 trigrams, 3 four-grams, 2 five-grams
    assert_eq!(a.len(), 1 + 4 + 3 + 2);
    let mut b = Vec::new();
    f.for_each("  HERZ!! ", |x| b.push(x));
    assert_eq!(a, b, "case and punctuation do not change features");
    let mut c = Vec::new();
    f.for_each("Herz Lunge", |x| c.push(x));
    // two words: 2 unigrams + 1 bigram + char n-grams of both (<lunge>: 5+4+3)
    assert_eq!(c.len(), 2 + 1 + 9 + 12);
    let mut d = Vec::new();
    f.for_each("Lunge Herz", |x| d.push(x));
    let (mut cs, mut ds) = (c.clone(), d.clone());
    cs.sort();
    ds.sort();
    assert_ne!(cs, ds, "the bigram depends on word order");
    let mut u = Vec::new();
    f.for_each("Übelkeit", |x| u.push(x));
    assert_eq!(
        u.len(),
        1 + 9 + 8 + 7,
        "umlaut bytes stay in the word (10 bytes + marks)"
    );
}

#[test]
fn ngram_classifier_learns_demo_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = demo_corpus(&tmp.path().join("c"));
    // trained on the human labels of the demo subset (majority of 3 annotators)
    let docs = read_corpus(&corpus);
    let human = demo_dir().join("labels.csv");
    let out = tmp.path().join("clf");
    run_op(
        &TrainClassifier,
        &[
            ("corpus", Value::Path(corpus.clone())),
            ("labels", Value::Path(human.clone())),
            ("positive", Value::Str("medizinisch".into())),
            ("valid_fraction", Value::Float(0.3)),
        ],
        &out,
    )
    .unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("classifier.json")).unwrap())
            .unwrap();
    assert!(info["valid"]["f1"].as_f64().unwrap() >= 0.8, "{info}");
    // the three splits are disjoint and cover the labelled documents
    let n = |k: &str| info[k].as_u64().unwrap();
    // 72 documents have a majority label: about 0.5 / 0.3 / 0.2 of them
    assert!(
        n("test_documents") >= 8 && n("valid_documents") >= 12,
        "{info}"
    );
    assert_eq!(
        n("train_documents") + n("valid_documents") + n("test_documents"),
        72
    );
    assert_eq!(info["target_precision"], 0.95);
    assert!(info["test"]["f1"].as_f64().unwrap() >= 0.7, "{info}");
    let (_, model) = load_classifier(&out).unwrap();
    let med = "Bei Asthma bronchiale helfen Salbutamol und ein Lungenfunktionstest klärt die Diagnose. Die Lunge reagiert auf Kälte mit Atemnot.";
    let non = "Der FC Bergheim gewann im Handball, die Zuschauer in Leipzig feierten bis spät in die Nacht.";
    assert!(
        model.score(med) > model.score(non),
        "{} vs {}",
        model.score(med),
        model.score(non)
    );
    assert!(docs.len() > 300);
    // the stored logit is bias + mean of the weights of its features (recomputed here)
    let mut sum = 0f64;
    let mut n = 0;
    model.features.for_each(med, |b| {
        sum += model.weights[b] as f64;
        n += 1;
    });
    assert!((model.logit(med) as f64 - (model.bias as f64 + sum / n as f64)).abs() < 1e-4);
}

#[test]
fn embed_classifier_is_a_logistic_head_on_the_mean_hidden_state() {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = tiny_model(&tmp.path().join("m"), &demo_words());
    let corpus = demo_corpus(&tmp.path().join("c"));
    let out = tmp.path().join("clf");
    train_demo_classifier(
        &corpus,
        &out,
        &[
            ("method", Value::Str("embed".into())),
            ("model", Value::Path(model_dir.clone())),
            ("max_tokens", Value::Int(64)),
        ],
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("classifier.json")).unwrap())
            .unwrap();
    assert_eq!(info["method"], "embed");
    assert!(
        info["train_documents"].as_u64().unwrap()
            + info["valid_documents"].as_u64().unwrap()
            + info["test_documents"].as_u64().unwrap()
            >= 60
    );
    // The classifier holds its model: it still loads with the model's
    // directory gone from where it was trained.
    assert_eq!(info["model_dir"], "model");
    let moved = tmp.path().join("m-moved");
    std::fs::rename(&model_dir, &moved).unwrap();
    let model_dir = moved;
    let (_, clf) = load_any_classifier(&out).unwrap();
    // recompute a score through flow-model directly
    let model = flow_model::Model::load(&model_dir).unwrap();
    let tok = flow_model::Tokenizer::load(&model_dir).unwrap();
    let w: Vec<f32> = std::fs::read(out.join("weights.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(w.len(), 32);
    let text = read_corpus(&corpus)[0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ids = tok.encode(&text, false).unwrap();
    ids.truncate(64);
    let h = model.mean_hidden_state(&ids);
    let z =
        info["bias"].as_f64().unwrap() as f32 + h.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>();
    let expected = 1.0 / (1.0 + (-z).exp());
    assert!((clf.score(&text).unwrap() - expected).abs() < 1e-5);
    // the head fits the labelled documents (mostly its training data) well above the base rate
    let (rows, _) = read_labels(&demo_dir().join("labels.csv")).unwrap();
    let truth: HashMap<String, bool> = majority(&rows)
        .into_iter()
        .filter_map(|(id, l)| Some((id, l? == "medizinisch")))
        .collect();
    let docs = read_corpus(&corpus);
    let (mut right, mut total) = (0, 0);
    for d in docs
        .iter()
        .filter(|d| truth.contains_key(d["id"].as_str().unwrap()))
    {
        let y = truth[d["id"].as_str().unwrap()];
        right += ((clf.score(d["text"].as_str().unwrap()).unwrap() >= 0.5) == y) as usize;
        total += 1;
    }
    let base = truth
        .values()
        .filter(|y| !**y)
        .count()
        .max(truth.values().filter(|y| **y).count());
    assert!(
        right as f64 / total as f64 > base as f64 / truth.len() as f64 + 0.1,
        "{right}/{total}, base {base}"
    );
}

/// Trains a classifier of the demo labels (positive `medizinisch`) on
/// `corpus` into `out`, with `extra` params besides those.
pub(crate) fn train_demo_classifier(corpus: &Path, out: &Path, extra: &[(&str, Value)]) {
    let mut params = vec![
        ("corpus", Value::Path(corpus.to_path_buf())),
        ("labels", Value::Path(demo_dir().join("labels.csv"))),
        ("positive", Value::Str("medizinisch".into())),
    ];
    params.extend(extra.iter().cloned());
    run_op(&TrainClassifier, &params, out).unwrap();
}

/// The tiny XLM-R made by transformers (scripts/make_encoder_golden.py),
/// its tokenizer trained on the demo texts.
pub(crate) fn golden_xlmr() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("model/tests/golden/encoder/xlmr/model")
}

#[test]
fn encoder_classifier_fine_tunes_and_saves_a_transformers_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = demo_corpus(&tmp.path().join("c"));
    let out = tmp.path().join("clf");
    train_demo_classifier(
        &corpus,
        &out,
        &[
            ("method", Value::Str("encoder".into())),
            ("encoder", Value::Path(golden_xlmr())),
            ("max_len", Value::Int(32)),
            ("batch", Value::Int(8)),
            ("epochs", Value::Int(10)),
            ("lr", Value::Float(5e-3)),
        ],
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("classifier.json")).unwrap())
            .unwrap();
    assert_eq!(info["method"], "encoder");
    assert_eq!(info["architecture"], "XLMRobertaForSequenceClassification");
    assert_eq!(
        info["labels"],
        serde_json::json!(["allgemein", "medizinisch"])
    );
    let losses: Vec<f64> = info["epoch_losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert!(
        losses[9] < losses[0] - 0.1,
        "training lowers the loss: {losses:?}"
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["id2label"]["1"], "medizinisch");
    assert!(out.join("model.safetensors").is_file() && out.join("tokenizer.json").is_file());
    // the artifact scores as the runtime computes it directly from the saved directory
    let (_, clf) = load_any_classifier(&out).unwrap();
    let (enc, report) = flow_model::encoder::Encoder::load(&out, 5).unwrap();
    assert!(report.initialised.is_empty());
    let tok = flow_model::encoder::EncoderTokenizer::load(&out).unwrap();
    let docs = read_corpus(&corpus);
    let texts: Vec<&str> = docs[..12]
        .iter()
        .map(|d| d["text"].as_str().unwrap())
        .collect();
    let batch = clf.score_batch(&texts);
    for (t, got) in texts.iter().zip(batch) {
        let ids = tok.encode(t, 32).unwrap();
        let want = enc.probabilities(&[ids]).unwrap()[0];
        let got = got.unwrap();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!((clf.score(t).unwrap() - want).abs() < 1e-5);
    }
    // the split rule and the metrics of the test split are there
    assert!(info["test_documents"].as_u64().unwrap() >= 8);
    assert!(info["test"]["f1"].is_number() && info["threshold"].is_number());
}

/// Trains the encoder classifier (and the n-gram one, for comparison) on the
/// demo labels and writes what scripts/check_encoder_classifier.py compares
/// with transformers: `clf/` (the artifact), `ngram/` and `scores.jsonl`
/// (flow's score of held-out documents: every corpus document outside the
/// train split). Run by hand (see the script); settings from the environment:
/// FLOW_CHECK_OUT (required), FLOW_CHECK_ENCODER (default: the tiny golden
/// XLM-R), FLOW_CHECK_MAX_LEN, FLOW_CHECK_EPOCHS, FLOW_CHECK_LR, FLOW_CHECK_BATCH.
#[test]
#[ignore = "run by hand through scripts/check_encoder_classifier.py"]
fn export_encoder_classifier_for_transformers_check() {
    let env = |k: &str| std::env::var(k).ok();
    let out = std::path::PathBuf::from(env("FLOW_CHECK_OUT").expect("FLOW_CHECK_OUT"));
    let encoder = env("FLOW_CHECK_ENCODER")
        .map(Into::into)
        .unwrap_or_else(golden_xlmr);
    let num = |k: &str, d: f64| env(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let corpus = demo_corpus(&out.join("corpus"));
    let clf = out.join("clf");
    let _ = std::fs::remove_dir_all(&clf);
    let t = std::time::Instant::now();
    train_demo_classifier(
        &corpus,
        &clf,
        &[
            ("method", Value::Str("encoder".into())),
            ("encoder", Value::Path(encoder)),
            (
                "max_len",
                Value::Int(num("FLOW_CHECK_MAX_LEN", 128.0) as i64),
            ),
            ("batch", Value::Int(num("FLOW_CHECK_BATCH", 8.0) as i64)),
            ("epochs", Value::Int(num("FLOW_CHECK_EPOCHS", 10.0) as i64)),
            ("lr", Value::Float(num("FLOW_CHECK_LR", 5e-3))),
        ],
    );
    let train_secs = t.elapsed().as_secs_f64();
    let ngram = out.join("ngram");
    let _ = std::fs::remove_dir_all(&ngram);
    train_demo_classifier(&corpus, &ngram, &[]);
    let (info, model) = load_any_classifier(&clf).unwrap();
    let splitter = Splitter::new(0, 0.2, 0.2).unwrap();
    let (rows, _) = read_labels(&demo_dir().join("labels.csv")).unwrap();
    let labelled: HashMap<String, Option<String>> = majority(&rows).into_iter().collect();
    let docs = read_corpus(&corpus);
    let held: Vec<&serde_json::Value> = docs
        .iter()
        .filter(|d| {
            let id = d["id"].as_str().unwrap();
            !(labelled.get(id).is_some_and(|l| l.is_some())
                && splitter.split_of(id) == Split::Train)
        })
        .collect();
    let texts: Vec<&str> = held.iter().map(|d| d["text"].as_str().unwrap()).collect();
    let t = std::time::Instant::now();
    let scores = model.score_batch(&texts);
    let score_secs = t.elapsed().as_secs_f64();
    let mut lines = String::new();
    for (d, s) in held.iter().zip(scores) {
        lines.push_str(
            &serde_json::json!({"id": d["id"], "text": d["text"], "score": s.unwrap()}).to_string(),
        );
        lines.push('\n');
    }
    std::fs::write(out.join("scores.jsonl"), lines).unwrap();
    let ng: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ngram.join("classifier.json")).unwrap())
            .unwrap();
    println!(
        "CHECK encoder: train {train_secs:.1}s, {} held-out documents scored in {score_secs:.2}s; max_len {:?}",
        held.len(),
        info.max_tokens
    );
    for (name, e) in [
        ("encoder", serde_json::to_value(&info.eval).unwrap()),
        ("ngram", ng),
    ] {
        println!(
            "CHECK {name}: threshold {:.4} ({}); validation P {:.3} R {:.3} F1 {:.3} (n={}); test P {:.3} R {:.3} F1 {:.3} (n={}, {} positive)",
            e["threshold"].as_f64().unwrap(),
            e["threshold_rule"].as_str().unwrap(),
            e["valid"]["precision"].as_f64().unwrap(),
            e["valid"]["recall"].as_f64().unwrap(),
            e["valid"]["f1"].as_f64().unwrap(),
            e["valid_documents"],
            e["test"]["precision"].as_f64().unwrap(),
            e["test"]["recall"].as_f64().unwrap(),
            e["test"]["f1"].as_f64().unwrap(),
            e["test_documents"],
            e["test_positive"],
        );
    }
}
