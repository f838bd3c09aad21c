//! The train / validation / test splits of the labelled documents and the
//! threshold rule (issue 13, item 12): the model is fitted on `train`, the
//! threshold chosen on `validation`, and precision / recall / F1 reported on
//! `test`, which took part in neither.
//!
//! A document's split is a function of (seed, id) alone — blake3 of both
//! mapped to [0, 1): below `test_fraction` it is a test document, below
//! `test_fraction + valid_fraction` a validation one, else a training one —
//! so adding labels never moves a labelled document between splits.

use miette::miette;
use serde::{Deserialize, Serialize};

use super::super::agreement::Prf;
use super::super::sample::sample_score;
use crate::op::OpResult;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// The fractions of the split.
#[derive(Clone, Copy, Debug)]
pub struct Splitter {
    pub seed: u64,
    pub valid_fraction: f64,
    pub test_fraction: f64,
}

impl Splitter {
    pub fn new(seed: u64, valid_fraction: f64, test_fraction: f64) -> OpResult<Splitter> {
        if !(valid_fraction > 0.0 && test_fraction >= 0.0 && valid_fraction + test_fraction <= 0.9)
        {
            return Err(miette!(
                help = "e.g. valid_fraction: 0.2, test_fraction: 0.2",
                "parameters `valid_fraction` {valid_fraction} and `test_fraction` {test_fraction}: need valid_fraction > 0, test_fraction >= 0 and their sum <= 0.9"
            ));
        }
        Ok(Splitter {
            seed,
            valid_fraction,
            test_fraction,
        })
    }

    pub fn split_of(&self, id: &str) -> Split {
        let u = sample_score(self.seed ^ 0x5eed, id) as f64 / u64::MAX as f64;
        if u < self.test_fraction {
            Split::Test
        } else if u < self.test_fraction + self.valid_fraction {
            Split::Valid
        } else {
            Split::Train
        }
    }

    /// Fails unless every split that should have documents has some of both classes
    /// in train, and some documents in validation and test.
    pub fn check_counts(&self, labels: &[(Split, bool)]) -> OpResult<()> {
        let n = |s: Split| labels.iter().filter(|e| e.0 == s).count();
        let pos = labels.iter().filter(|e| e.0 == Split::Train && e.1).count();
        let (tr, va, te) = (n(Split::Train), n(Split::Valid), n(Split::Test));
        if tr == 0 || va == 0 || (self.test_fraction > 0.0 && te == 0) || pos == 0 || pos == tr {
            return Err(miette!(
                help = "label more documents, or change valid_fraction / test_fraction",
                "too few labelled documents for the splits: {tr} train ({pos} positive), {va} validation, {te} test"
            ));
        }
        Ok(())
    }
}

/// Chooses the threshold on (score, is positive) pairs: the one maximising
/// F1, or with `target_precision` > 0 the lowest one whose precision reaches
/// it (most recall). Candidates are the scores themselves. The flag says
/// whether the target was reached; when no threshold reaches it, the
/// maximum-F1 threshold is returned with `false`.
pub fn choose_threshold(scored: &[(f32, bool)], target_precision: f64) -> (f64, Prf, bool) {
    let mut cands: Vec<f32> = scored.iter().map(|s| s.0).collect();
    cands.sort_by(|a, b| a.total_cmp(b));
    cands.dedup();
    let eval = |t: f32| Prf::from_pairs(scored.iter().map(|&(s, y)| (s >= t, y)));
    let mut best_f1: Option<(f64, Prf)> = None;
    let mut best_target: Option<(f64, Prf)> = None;
    for &t in &cands {
        let p = eval(t);
        if best_f1.as_ref().is_none_or(|(_, b)| p.f1 > b.f1) {
            best_f1 = Some((t as f64, p.clone()));
        }
        if target_precision > 0.0
            && p.tp > 0
            && p.precision >= target_precision
            && best_target
                .as_ref()
                .is_none_or(|(_, b)| p.recall > b.recall)
        {
            best_target = Some((t as f64, p));
        }
    }
    if target_precision > 0.0 {
        if let Some((t, p)) = best_target {
            return (t, p, true);
        }
    }
    let (t, p) = best_f1.unwrap_or_else(|| (1.0, eval(1.0 + f32::EPSILON)));
    (t, p, target_precision <= 0.0)
}

/// Threshold and metrics of a trained classifier on the three splits.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Evaluation {
    pub threshold: f64,
    pub threshold_rule: String,
    pub target_precision: f64,
    pub target_reached: bool,
    pub train: Prf,
    pub valid: Prf,
    pub test: Prf,
    pub valid_at_half: Prf,
    pub test_at_half: Prf,
    pub train_documents: usize,
    pub valid_documents: usize,
    pub test_documents: usize,
    pub valid_positive: usize,
    pub test_positive: usize,
}

/// Chooses the threshold on the validation scores and measures every split at it.
pub fn evaluate(scored: &[(Split, f32, bool)], target_precision: f64) -> Evaluation {
    let of = |s: Split| -> Vec<(f32, bool)> {
        scored
            .iter()
            .filter(|e| e.0 == s)
            .map(|e| (e.1, e.2))
            .collect()
    };
    let (train, valid, test) = (of(Split::Train), of(Split::Valid), of(Split::Test));
    let (threshold, at_t, reached) = choose_threshold(&valid, target_precision);
    let at =
        |v: &[(f32, bool)], t: f64| Prf::from_pairs(v.iter().map(|&(s, y)| (s as f64 >= t, y)));
    Evaluation {
        threshold,
        threshold_rule: match (target_precision > 0.0, reached) {
            (true, true) => format!("lowest threshold with validation precision >= {target_precision}"),
            (true, false) => format!("maximum validation F1 (no threshold reached validation precision {target_precision})"),
            _ => "maximum validation F1".into(),
        },
        target_precision,
        target_reached: reached,
        train: at(&train, threshold),
        valid: at_t,
        test: at(&test, threshold),
        valid_at_half: at(&valid, 0.5),
        test_at_half: at(&test, 0.5),
        train_documents: train.len(),
        valid_documents: valid.len(),
        test_documents: test.len(),
        valid_positive: valid.iter().filter(|e| e.1).count(),
        test_positive: test.iter().filter(|e| e.1).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_choice_maximises_f1_or_meets_precision() {
        let scored = [
            (0.9, true),
            (0.8, true),
            (0.7, false),
            (0.6, true),
            (0.4, false),
            (0.3, true),
            (0.1, false),
        ];
        let (t, p, ok) = choose_threshold(&scored, 0.0);
        // t=0.6: tp 3 fp 1 fn 1 → F1 0.75; t=0.3: tp 4 fp 2 → F1 0.8
        assert!((t - 0.3f32 as f64).abs() < 1e-6 && ok, "{t}");
        assert!((p.f1 - 0.8).abs() < 1e-9);
        let (t, p, ok) = choose_threshold(&scored, 1.0);
        assert!((t - 0.8f32 as f64).abs() < 1e-6 && p.precision == 1.0 && p.tp == 2 && ok);
        // precision 0.75 first reached at t=0.6 (3 of 4); lower thresholds fall below it
        let (t, p, ok) = choose_threshold(&scored, 0.75);
        assert!((t - 0.6f32 as f64).abs() < 1e-6 && p.recall == 0.75 && ok);
        // unreachable target: maximum F1, flagged
        let (t, _, ok) = choose_threshold(&[(0.9, false), (0.8, true), (0.1, false)], 1.0);
        assert!((t - 0.8f32 as f64).abs() < 1e-6 && !ok);
    }

    #[test]
    fn splits_follow_the_fractions_and_ignore_other_ids() {
        let s = Splitter::new(3, 0.2, 0.2).unwrap();
        let ids: Vec<String> = (0..20_000).map(|i| format!("doc{i}")).collect();
        let n = |k: Split| ids.iter().filter(|i| s.split_of(i) == k).count() as f64 / 20_000.0;
        assert!((n(Split::Test) - 0.2).abs() < 0.02 && (n(Split::Valid) - 0.2).abs() < 0.02);
        // a document's split depends on its id and the seed only
        assert_eq!(
            s.split_of("doc7"),
            Splitter::new(3, 0.2, 0.2).unwrap().split_of("doc7")
        );
        assert!(Splitter::new(0, 0.0, 0.2).is_err() && Splitter::new(0, 0.5, 0.5).is_err());
    }

    #[test]
    fn evaluation_chooses_on_validation_and_reports_test() {
        use Split::*;
        let scored = [
            (Valid, 0.9, true),
            (Valid, 0.6, false),
            (Valid, 0.5, true),
            (Test, 0.95, true),
            (Test, 0.7, false),
            (Test, 0.55, true),
            (Train, 0.99, true),
            (Train, 0.1, false),
        ];
        let e = evaluate(&scored, 0.95);
        // validation: only t=0.9 gives precision 1 ≥ 0.95
        assert!((e.threshold - 0.9f32 as f64).abs() < 1e-6 && e.target_reached);
        assert_eq!((e.test.tp, e.test.fp, e.test.fn_), (1, 0, 1));
        assert_eq!(e.test_documents, 3);
        assert_eq!((e.train.tp, e.train.tn), (1, 1));
    }
}
