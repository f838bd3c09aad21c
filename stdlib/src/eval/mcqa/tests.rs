use super::*;
use crate::model::runtime::LogLikelihood;
use crate::model::runtime::ToyModel;
use crate::op::testing::{full_params, with_context, RunOptions};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;

fn one_thread() -> RunOptions {
    RunOptions {
        threads: 1,
        ..RunOptions::default()
    }
}

fn item(subject: &str, question: &str, choices: &[&str], gold: usize) -> McItem {
    McItem {
        id: None,
        subject: subject.into(),
        question: question.into(),
        choices: choices.iter().map(|s| s.to_string()).collect(),
        gold,
        source: "test:1".into(),
    }
}

// Expected strings follow lm-evaluation-harness's
// lm_eval/tasks/mmlu/default/_default_template_yaml:
//   doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:"
//   doc_to_choice: ["A", "B", "C", "D"], target_delimiter " ", fewshot_delimiter "\n\n",
// the description of mmlu_clinical_knowledge.yaml, and samplers.py's
// get_context (text + delimiter + target + fewshot_delimiter per example).
#[test]
fn mmlu_one_shot_prompt_matches_lm_eval_rendering() {
    let shot = item(
        "clinical_knowledge",
        "  What is the normal pH of blood?\n",
        &["7.0", "7.4", "6.8", "8.0"],
        1,
    );
    let q = item(
        "clinical_knowledge",
        "Which organ makes insulin?",
        &["Liver", "Pancreas", "Kidney", "Spleen"],
        1,
    );
    let ctx = build_context(Format::Mmlu, &q, &[&shot]).unwrap();
    let expected =
        "The following are multiple choice questions (with answers) about clinical knowledge.\n\n\
What is the normal pH of blood?\nA. 7.0\nB. 7.4\nC. 6.8\nD. 8.0\nAnswer: B\n\n\
Which organ makes insulin?\nA. Liver\nB. Pancreas\nC. Kidney\nD. Spleen\nAnswer:";
    assert_eq!(ctx, expected);
    assert_eq!(continuations(&q), vec![" A", " B", " C", " D"]);
}

#[test]
fn mmlu_zero_shot_prompt_and_two_shots_in_dev_order() {
    let a = item("anatomy", "Q1", &["a", "b", "c", "d"], 0);
    let b = item("anatomy", "Q2", &["e", "f", "g", "h"], 3);
    let q = item("anatomy", "Q3", &["i", "j", "k", "l"], 2);
    assert_eq!(
            build_context(Format::Mmlu, &q, &[]).unwrap(),
            "The following are multiple choice questions (with answers) about anatomy.\n\nQ3\nA. i\nB. j\nC. k\nD. l\nAnswer:"
        );
    assert_eq!(
            build_context(Format::Mmlu, &q, &[&a, &b]).unwrap(),
            "The following are multiple choice questions (with answers) about anatomy.\n\n\
Q1\nA. a\nB. b\nC. c\nD. d\nAnswer: A\n\nQ2\nA. e\nB. f\nC. g\nD. h\nAnswer: D\n\nQ3\nA. i\nB. j\nC. k\nD. l\nAnswer:"
        );
}

// openGPT-X's lm-evaluation-harness fork,
// lm_eval/tasks/opengptx/ogx_mmlux/ogx_mmlux_de-college_medicine.yaml
// (written by _generate_configs.py from PROMPT_WORDS["DE"] = (..., "Antwort")):
//   include: _default_mmlux_template_yaml (fewshot_config.sampler: first_n)
//   doc_to_choice: "['A', 'B', 'C', 'D']"
//   doc_to_text: "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAntwort:"
//   description: "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Hochschulmedizin."
// and ..._de-clinical_knowledge.yaml / _de-anatomy.yaml for the other two
// descriptions. lm-eval's fewshot_context starts with the description and
// appends samplers.get_context (text + target_delimiter " " + target +
// fewshot_delimiter "\n\n" per example) with no separator of its own.
#[test]
fn mmlux_prompt_uses_german_cue_and_description() {
    let cue = "Antwort:";
    let block = |q: &str, c: [&str; 4]| {
        format!(
            "{q}\nA. {}\nB. {}\nC. {}\nD. {}\n{cue}",
            c[0], c[1], c[2], c[3]
        )
    };
    let q = item(
        "college_medicine_DE",
        " Was ist ein Erythrozyt? ",
        &["Zelle", "Organ", "Gewebe", "Virus"],
        0,
    );
    let college_medicine =
            "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zum Thema Hochschulmedizin.";
    assert_eq!(
        build_context(Format::Mmlux, &q, &[]).unwrap(),
        format!(
            "{college_medicine}{}",
            block(
                "Was ist ein Erythrozyt?",
                ["Zelle", "Organ", "Gewebe", "Virus"]
            )
        )
    );

    let shot = item(
        "clinical_knowledge",
        "Normaler pH-Wert des Blutes?\n",
        &["7,0", "7,4", "6,8", "8,0"],
        1,
    );
    let q = item(
        "clinical_knowledge",
        "Welches Organ bildet Insulin?",
        &["Leber", "Pankreas", "Niere", "Milz"],
        1,
    );
    let clinical_knowledge =
        "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zu klinischen Kenntnissen.";
    assert_eq!(
        build_context(Format::Mmlux, &q, &[&shot]).unwrap(),
        format!(
            "{clinical_knowledge}{} B\n\n{}",
            block("Normaler pH-Wert des Blutes?", ["7,0", "7,4", "6,8", "8,0"]),
            block(
                "Welches Organ bildet Insulin?",
                ["Leber", "Pankreas", "Niere", "Milz"]
            )
        )
    );
    assert_eq!(continuations(&q), vec![" A", " B", " C", " D"]);

    let q = item("anatomy", "Q", &["a", "b", "c", "d"], 2);
    assert_eq!(
        build_context(Format::Mmlux, &q, &[]).unwrap(),
        format!(
            "Im Folgenden finden Sie Multiple-Choice-Fragen (mit Antworten) zur Anatomie.{}",
            block("Q", ["a", "b", "c", "d"])
        )
    );
}

// The 57 subjects of lm-eval's MMLU (lm_eval/tasks/mmlu/_generate_configs.py
// SUBJECTS), which openGPT-X's generator translates one for one.
#[test]
fn mmlux_knows_every_mmlu_subject_and_rejects_others() {
    let mmlu = "abstract_algebra anatomy astronomy business_ethics clinical_knowledge \
college_biology college_chemistry college_computer_science college_mathematics \
college_medicine college_physics computer_security conceptual_physics econometrics \
electrical_engineering elementary_mathematics formal_logic global_facts \
high_school_biology high_school_chemistry high_school_computer_science \
high_school_european_history high_school_geography high_school_government_and_politics \
high_school_macroeconomics high_school_mathematics high_school_microeconomics \
high_school_physics high_school_psychology high_school_statistics high_school_us_history \
high_school_world_history human_aging human_sexuality international_law jurisprudence \
logical_fallacies machine_learning management marketing medical_genetics miscellaneous \
moral_disputes moral_scenarios nutrition philosophy prehistory professional_accounting \
professional_law professional_medicine professional_psychology public_relations \
security_studies sociology us_foreign_policy virology world_religions";
    let subjects: Vec<&str> = mmlu.split_whitespace().collect();
    assert_eq!(subjects.len(), 57);
    for s in &subjects {
        let d = mmlux_description(s).unwrap_or_else(|| panic!("no description for {s}"));
        assert!(
            d.contains("Multiple-Choice-Fragen (mit Antworten)"),
            "{s}: {d}"
        );
        assert!(d.ends_with('.') && !d.ends_with("\n"), "{s}: {d}");
        assert_eq!(mmlux_description(&format!("{s}_DE")), Some(d));
    }
    let table: Vec<&str> = MMLUX_DE_DESCRIPTIONS.iter().map(|(s, _)| *s).collect();
    let mut sorted = subjects.clone();
    sorted.sort_unstable();
    assert_eq!(table, sorted);

    let q = item("kardiologie", "Q", &["a", "b", "c", "d"], 0);
    let err = build_context(Format::Mmlux, &q, &[]).unwrap_err();
    assert!(format!("{err}").contains("subject `kardiologie`"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let p = write(
            dir.path(),
            "b.jsonl",
            "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0,\"subject\":\"anatomy\"}\n\
{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0,\"subject\":\"kardiologie\"}\n",
        );
    let err = load_items(&p, Format::Mmlux).unwrap_err();
    let msg = format!("{err:?}");
    assert!(
        msg.contains("b.jsonl:2") && msg.contains("kardiologie"),
        "{msg}"
    );
    // The same file is fine as English MMLU, which takes any subject.
    assert_eq!(load_items(&p, Format::Mmlu).unwrap().len(), 2);
}

// lm-eval lm_eval/tasks/medqa/preprocess_medqa.py:
// f"Question: {doc['sent1']}\n" + "".join(f"{k}. {v}\n") + "Answer:", no description.
#[test]
fn medqa_prompt_has_no_description_and_keeps_question_as_is() {
    let q = item(
        "medqa",
        "A 23-year-old ... ?",
        &["a", "b", "c", "d", "e"],
        4,
    );
    assert_eq!(
        build_context(Format::Medqa, &q, &[]).unwrap(),
        "Question: A 23-year-old ... ?\nA. a\nB. b\nC. c\nD. d\nE. e\nAnswer:"
    );
    assert_eq!(continuations(&q).last().map(String::as_str), Some(" E"));
}

/// A GPT-2-like word tokenizer: each run of whitespace, and each word with
/// its one leading space, is a token; ids are assigned on first sight.
struct WordTokenizer(std::sync::Mutex<Vec<String>>);

impl WordTokenizer {
    fn id(&self, piece: &str) -> u32 {
        let mut v = self.0.lock().unwrap();
        if let Some(i) = v.iter().position(|p| p == piece) {
            return i as u32;
        }
        v.push(piece.to_string());
        (v.len() - 1) as u32
    }
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut pieces: Vec<String> = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let start = i;
            if chars[i] == ' ' && i + 1 < chars.len() && !chars[i + 1].is_whitespace() {
                i += 1;
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
            } else if chars[i].is_whitespace() {
                while i < chars.len()
                    && chars[i].is_whitespace()
                    && !(chars[i] == ' ' && i + 1 < chars.len() && !chars[i + 1].is_whitespace())
                {
                    i += 1;
                }
            } else {
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
            }
            pieces.push(chars[start..i].iter().collect());
        }
        pieces.iter().map(|p| self.id(p)).collect()
    }
}

#[test]
fn encode_pair_moves_trailing_whitespace_onto_the_continuation() {
    let tok = WordTokenizer(Default::default());
    let enc = |t: &str| -> Result<Vec<u32>, String> { Ok(tok.encode(t)) };
    // The context ends in a space: lm-eval scores "Answer:" + " A", not "Answer: " + "A".
    let (ctx, cont) = encode_pair(&enc, "Q\nAnswer: ", "A").unwrap();
    assert_eq!(ctx, tok.encode("Q\nAnswer:"));
    assert_eq!(cont, vec![tok.id(" A")]);
    assert_ne!(cont, tok.encode("A"));
    // Several trailing whitespace characters move together.
    let (ctx, cont) = encode_pair(&enc, "Answer: B\n\n", "Next").unwrap();
    assert_eq!(ctx, tok.encode("Answer: B"));
    assert_eq!(cont, tok.encode("Answer: B\n\nNext")[ctx.len()..].to_vec());
    assert_eq!(cont, vec![tok.id("\n\n"), tok.id("Next")]);
    // Without trailing whitespace the context is kept as it is.
    let (ctx, cont) = encode_pair(&enc, "Answer:", " C").unwrap();
    assert_eq!(ctx, tok.encode("Answer:"));
    assert_eq!(cont, vec![tok.id(" C")]);
}

/// Scores continuations from a table: item question → per-letter scores.
struct TableScorer(BTreeMap<String, Vec<f64>>);

impl Scorer for TableScorer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String> {
        Ok(requests
            .iter()
            .map(|(ctx, cont)| {
                let text = String::from_utf8(ctx.iter().map(|&b| b as u8).collect()).unwrap();
                // The question is the line after the last blank line.
                let question = text
                    .rsplit("\n\n")
                    .next()
                    .unwrap()
                    .lines()
                    .next()
                    .unwrap()
                    .to_string();
                let letter = (*cont.last().unwrap() as u8 - b'A') as usize;
                LogLikelihood {
                    logprob: self.0[&question][letter],
                    is_greedy: false,
                }
            })
            .collect())
    }
    fn max_context(&self) -> usize {
        1 << 20
    }
}

#[test]
fn acc_and_acc_norm_with_a_fake_scorer() {
    let bench = vec![
        item("a", "q1", &["w", "x", "y", "z"], 0),
        item("a", "q2", &["w", "x", "y", "z"], 1),
        item("a", "q3", &["w", "x", "y", "z"], 2),
        item("b", "q4", &["w", "x", "y", "z"], 3),
    ];
    let table: BTreeMap<String, Vec<f64>> = [
        ("q1", vec![-1.0, -2.0, -3.0, -4.0]), // right
        ("q2", vec![-0.5, -0.6, -3.0, -4.0]), // wrong: A wins
        ("q3", vec![-2.0, -2.0, -2.0, -2.0]), // tie: first index (A), wrong
        ("q4", vec![-9.0, -9.0, -9.0, -0.1]), // right
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let scorer = TableScorer(table);
    let results = score_items(
        &scorer,
        Format::Mmlu,
        &bench,
        &[],
        0,
        Sampler::FirstN,
        3,
        &mut |_| Ok(()),
    )
    .unwrap();
    let preds: Vec<usize> = results.iter().map(|r| r.pred).collect();
    assert_eq!(preds, vec![0, 0, 0, 3]);
    // MMLU's choices are single letters, so lm-eval's length normalisation
    // (division by len("A") == 1) never changes the prediction.
    assert!(results.iter().all(|r| r.pred_norm == r.pred));
    let doc = report(Format::Mmlu, 0, &bench, &results);
    assert_eq!(doc.n, 4);
    assert_eq!(doc.acc, 0.5);
    // Subject a: 1 of 3, subject b: 1 of 1; macro = (1/3 + 1) / 2.
    assert!((doc.acc_macro - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12);
    assert!((doc.subjects["a"].acc - 1.0 / 3.0).abs() < 1e-12);
    // lm-eval's mean_stderr: sqrt(sample variance / n) over 0/1 scores.
    let expected_stderr = ((4.0 * 0.25) / 3.0 / 4.0f64).sqrt();
    assert!((doc.acc_stderr - expected_stderr).abs() < 1e-12);
}

#[test]
fn acc_norm_divides_by_the_choice_length_in_characters() {
    // -1.5 beats -3.0 raw, but per character -3.0/3 = -1.0 beats -1.5/1.
    let lls = [
        LogLikelihood {
            logprob: -1.5,
            is_greedy: false,
        },
        LogLikelihood {
            logprob: -3.0,
            is_greedy: false,
        },
    ];
    let r = predict_with_labels(&["x".to_string(), "äöü".to_string()], &lls);
    assert_eq!(r.pred, 0);
    assert_eq!(
        r.pred_norm, 1,
        "characters, not bytes: äöü is 3 characters (6 bytes)"
    );
    // A 6-byte label would have given -0.5 vs -1.5 and kept choice 0 only
    // if divided by bytes; check that bytes are not used.
    let lls = [
        LogLikelihood {
            logprob: -1.2,
            is_greedy: false,
        },
        LogLikelihood {
            logprob: -3.3,
            is_greedy: false,
        },
    ];
    let r = predict_with_labels(&["x".to_string(), "äöü".to_string()], &lls);
    assert_eq!(
        r.pred_norm, 1,
        "-3.3/3 = -1.1 > -1.2 by characters; by bytes -0.55 would also win"
    );
    let lls = [
        LogLikelihood {
            logprob: -0.9,
            is_greedy: false,
        },
        LogLikelihood {
            logprob: -3.3,
            is_greedy: false,
        },
    ];
    let r = predict_with_labels(&["x".to_string(), "äöü".to_string()], &lls);
    assert_eq!(
        r.pred_norm, 0,
        "by characters -1.1 < -0.9; by bytes -0.55 would win"
    );
}

/// Records what `score_items` asks and answers from the request alone.
struct RecordingScorer(std::sync::Mutex<Vec<(Vec<u32>, Vec<u32>)>>);

impl Scorer for RecordingScorer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        Ok(text.bytes().map(u32::from).collect())
    }
    fn loglikelihood(
        &self,
        requests: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<Vec<LogLikelihood>, String> {
        self.0.lock().unwrap().extend(requests.iter().cloned());
        Ok(requests
            .iter()
            .map(|(_, cont)| LogLikelihood {
                // -1 for " A", -2 for " B", ...: which answer belongs to
                // which choice is visible in the result.
                logprob: -((*cont.last().unwrap() as u8 - b'A') as f64 + 1.0),
                is_greedy: false,
            })
            .collect())
    }
    fn max_context(&self) -> usize {
        4096
    }
}

#[test]
fn each_choice_is_scored_as_its_letter_after_lm_evals_one_shot_context() {
    let scorer = RecordingScorer(Default::default());
    let dev = vec![item("anatomy", "D1", &["a", "b", "c", "d"], 2)];
    let bench = vec![item(
        "anatomy",
        "Where is the femur?",
        &["Leg", "Arm", "Head", "Neck"],
        0,
    )];
    let results = score_items(
        &scorer,
        Format::Mmlu,
        &bench,
        &dev,
        1,
        Sampler::FirstN,
        8,
        &mut |_| Ok(()),
    )
    .unwrap();
    // lm-eval's MMLU rendering, written out: description, the shot with its
    // answer, the question ending in "Answer:".
    let context = "The following are multiple choice questions (with answers) about anatomy.\n\n\
                   D1\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\n\
                   Where is the femur?\nA. Leg\nB. Arm\nC. Head\nD. Neck\nAnswer:";
    let bytes = |t: &str| t.bytes().map(u32::from).collect::<Vec<u32>>();
    let mut asked = scorer.0.lock().unwrap().clone();
    asked.sort();
    let mut expected: Vec<_> = [" A", " B", " C", " D"]
        .iter()
        .map(|c| (bytes(context), bytes(c)))
        .collect();
    expected.sort();
    assert_eq!(asked, expected);
    assert_eq!(results[0].loglikelihoods, vec![-1.0, -2.0, -3.0, -4.0]);
    assert_eq!(results[0].pred, 0, "the largest log-likelihood wins");
}

#[test]
fn shots_need_enough_dev_items_of_the_subject() {
    let model = ToyModel::new(1);
    let dev = vec![item("anatomy", "D1", &["a", "b", "c", "d"], 2)];
    let bench = vec![item("virology", "Q", &["a", "b", "c", "d"], 0)];
    let err = score_items(
        &model,
        Format::Mmlu,
        &bench,
        &dev,
        1,
        Sampler::FirstN,
        8,
        &mut |_| Ok(()),
    )
    .unwrap_err();
    assert!(
        format!("{err}").contains("subject `virology` has 0 dev item(s)"),
        "{err:?}"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn reads_mmlu_jsonl_with_index_or_letter_answers() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
            dir.path(),
            "b.jsonl",
            "{\"question\":\"q1\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":2,\"subject\":\"anatomy\"}\n\n\
{\"question\":\"q2\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":\"D\",\"subject\":\"anatomy\"}\n",
        );
    let items = load_items(&p, Format::Mmlu).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].gold, 2);
    assert_eq!(items[1].gold, 3);
    assert!(items[1].source.ends_with("b.jsonl:3"));
}

#[test]
fn bad_input_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":0,\"subject\":\"s\"}\n";
    let p = write(dir.path(), "missing.jsonl", &format!("{good}{{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"subject\":\"s\"}}\n"));
    let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
    assert!(
        err.contains("missing.jsonl:2: missing field `answer`"),
        "{err}"
    );

    let p = write(dir.path(), "range.jsonl", "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":4,\"subject\":\"s\"}\n");
    let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
    assert!(
        err.contains("range.jsonl:1: answer 4 is out of range"),
        "{err}"
    );

    let p = write(
        dir.path(),
        "json.jsonl",
        &format!("{good}{good}{{not json\n"),
    );
    let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
    assert!(err.contains("json.jsonl:3: not valid JSON"), "{err}");

    let p = write(
        dir.path(),
        "three.jsonl",
        "{\"question\":\"q\",\"choices\":[\"a\",\"b\",\"c\"],\"answer\":0,\"subject\":\"s\"}\n",
    );
    let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
    assert!(err.contains("three.jsonl:1: 3 choices"), "{err}");

    let p = write(
        dir.path(),
        "medqa.jsonl",
        "{\"question\":\"q\",\"options\":{\"A\":\"a\",\"B\":\"b\"},\"answer_idx\":\"C\"}\n",
    );
    let err = format!("{}", load_items(&p, Format::Medqa).unwrap_err());
    assert!(err.contains("medqa.jsonl:1: answer"), "{err}");
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn reads_medqa_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
            dir.path(),
            "m.jsonl",
            "{\"question\":\"Q?\",\"answer\":\"bee\",\"options\":{\"B\":\"bee\",\"A\":\"ay\",\"C\":\"cee\",\"D\":\"dee\",\"E\":\"ee\"},\"answer_idx\":\"B\",\"meta_info\":\"step1\"}\n",
        );
    let items = load_items(&p, Format::Medqa).unwrap();
    assert_eq!(items[0].choices, vec!["ay", "bee", "cee", "dee", "ee"]);
    assert_eq!(items[0].gold, 1);
    assert_eq!(items[0].subject, "medqa");
}

#[test]
fn reads_hendrycks_csv_with_quotes_and_header_csv() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "anatomy_test.csv",
        "\"Which bone, if any,\nis longest?\",Femur,Tibia,Ulna,Radius,A\nSecond,a,b,c,d,C\n",
    );
    let items = load_items(&p, Format::Mmlu).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].question, "Which bone, if any,\nis longest?");
    assert_eq!(items[0].subject, "anatomy");
    assert_eq!(items[1].gold, 2);
    assert!(
        items[1].source.ends_with("anatomy_test.csv:3"),
        "{}",
        items[1].source
    );

    let p = write(
        dir.path(),
        "h.csv",
        "subject,question,A,B,C,D,answer\nvirology,q,a,b,c,d,1\nvirology,q,a,b,c,d,E\n",
    );
    let err = format!("{}", load_items(&p, Format::Mmlu).unwrap_err());
    assert!(err.contains("h.csv:3"), "{err}");
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn write_results_copies_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let bench = vec![item("a", "q1", &["w", "x", "y", "z"], 1)];
    let results = vec![ItemResult {
        loglikelihoods: vec![-3.0, -1.0, -2.0, -4.0],
        is_greedy: vec![false; 4],
        pred: 1,
        pred_norm: 1,
    }];
    let ckpt = json!({"step": 10, "tokens_seen": 4096});
    let out = write_results(
        dir.path(),
        Format::Mmlu,
        1,
        &bench,
        &results,
        Some(serde_json::from_value(ckpt.clone()).unwrap()),
        "m",
    )
    .unwrap();
    assert_eq!(out["acc"], Value::Float(1.0));
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("mcqa.json")).unwrap())
            .unwrap();
    assert_eq!(doc["checkpoint"], ckpt);
    let line: Json = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("items.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(line["loglikelihoods"], json!([-3.0, -1.0, -2.0, -4.0]));
    assert_eq!(line["gold"], 1);
    assert_eq!(line["pred"], 1);
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/qwen2")
}

/// The op end to end on the golden tiny Qwen2 model (transformers-made):
/// each item's per-choice log-likelihood equals the sum of the runtime's
/// per-token log-probabilities over the continuation, a separate code path.
#[test]
fn mcqa_op_on_the_golden_model() {
    let dir = tempfile::tempdir().unwrap();
    let bench = write(
            dir.path(),
            "bench.jsonl",
            "{\"question\":\"Fever?\",\"choices\":[\"yes\",\"no\",\"maybe\",\"never\"],\"answer\":0,\"subject\":\"anatomy\"}\n\
{\"question\":\"Cough?\",\"choices\":[\"dry\",\"wet\",\"none\",\"both\"],\"answer\":3,\"subject\":\"virology\"}\n",
        );
    let dev = write(
            dir.path(),
            "dev.jsonl",
            "{\"question\":\"Pulse?\",\"choices\":[\"72\",\"7\",\"700\",\"0\"],\"answer\":0,\"subject\":\"anatomy\"}\n\
{\"question\":\"Virus?\",\"choices\":[\"a\",\"b\",\"c\",\"d\"],\"answer\":1,\"subject\":\"virology\"}\n",
        );
    let out_dir = dir.path().join("out");
    let params = full_params(
        &Mcqa,
        &[
            ("model", Value::Path(golden_dir())),
            ("bench", Value::Path(bench)),
            ("dev", Value::Path(dev)),
            ("format", Value::Str("mmlu".into())),
            ("shots", Value::Int(1)),
            ("limit", Value::Int(0)),
            ("batch_items", Value::Int(1)),
        ],
    );
    let outputs = with_context(params, &out_dir, one_thread(), |ctx| Mcqa.run(ctx))
        .0
        .unwrap();
    let doc: Json =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("mcqa.json")).unwrap()).unwrap();
    assert_eq!(doc["n"], 2);
    assert_eq!(outputs["acc"], Value::Float(doc["acc"].as_f64().unwrap()));
    assert_eq!(doc["subjects"].as_object().unwrap().len(), 2);
    let model = runtime::load(&golden_dir()).unwrap();
    let items = load_items(&out_dir.join("../bench.jsonl"), Format::Mmlu).unwrap();
    let dev_items = load_items(&out_dir.join("../dev.jsonl"), Format::Mmlu).unwrap();
    let lines: Vec<Json> = std::fs::read_to_string(out_dir.join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (k, item) in items.iter().enumerate() {
        let shot = dev_items
            .iter()
            .find(|d| d.subject == item.subject)
            .unwrap();
        let context = build_context(Format::Mmlu, item, &[shot]).unwrap();
        for (i, cont) in continuations(item).iter().enumerate() {
            let (mut ctx_ids, cont_ids) =
                encode_pair(&|t| model.encode(t, false), &context, cont).unwrap();
            // The golden model takes 128 tokens: the prompt loses its start.
            let excess = (ctx_ids.len() + cont_ids.len()).saturating_sub(model.max_context());
            ctx_ids.drain(..excess);
            let all: Vec<u32> = ctx_ids.iter().chain(&cont_ids).copied().collect();
            let per_token = model.token_logprobs(&all, 1).unwrap();
            let expected: f64 = per_token[ctx_ids.len()..]
                .iter()
                .map(|t| t.as_ref().unwrap().logprob as f64)
                .sum();
            let got = lines[k]["loglikelihoods"][i].as_f64().unwrap();
            assert!(
                (got - expected).abs() < 1e-3,
                "item {k} choice {i}: {got} vs {expected}"
            );
        }
    }
}

/// Issue 13, item 14: lm-eval's default sampler (MedQA's rule) draws each
/// question's shot with `random.Random(1234).sample(docs, 1)`, one draw per
/// question in order. Expected indices from CPython:
/// `r = random.Random(1234); [r.sample(range(50), 1)[0] for _ in range(10)]`.
#[test]
fn random_sampler_draws_lm_evals_shots_in_question_order() {
    let scorer = RecordingScorer(Default::default());
    let dev: Vec<McItem> = (0..50)
        .map(|i| item("anatomy", &format!("D{i}"), &["a", "b", "c", "d"], 0))
        .collect();
    let bench: Vec<McItem> = (0..10)
        .map(|i| item("anatomy", &format!("Q{i}"), &["a", "b", "c", "d"], 0))
        .collect();
    score_items(
        &scorer,
        Format::Mmlu,
        &bench,
        &dev,
        1,
        Sampler::Random(1234),
        3,
        &mut |_| Ok(()),
    )
    .unwrap();
    let requests = scorer.0.lock().unwrap().clone();
    let expected = [49, 28, 7, 0, 5, 37, 2, 42, 44, 5];
    for (q, want) in expected.iter().enumerate() {
        let ctx = requests
            .iter()
            .map(|(c, _)| String::from_utf8(c.iter().map(|&t| t as u8).collect()).unwrap())
            .find(|c| c.contains(&format!("\n\nQ{q}\nA.")))
            .unwrap();
        assert!(
            ctx.contains(&format!("about anatomy.\n\nD{want}\nA.")),
            "question {q}: {ctx}"
        );
    }
    // first_n takes D0 for every question.
    let scorer = RecordingScorer(Default::default());
    score_items(
        &scorer,
        Format::Mmlu,
        &bench[..2],
        &dev,
        1,
        Sampler::FirstN,
        3,
        &mut |_| Ok(()),
    )
    .unwrap();
    assert!(scorer.0.lock().unwrap().iter().all(|(c, _)| {
        String::from_utf8(c.iter().map(|&t| t as u8).collect())
            .unwrap()
            .contains("\n\nD0\nA.")
    }));
}
