//! Batch calibration of scored answers (the local backend's).

use super::*;

/// Index of the largest score (the first on ties; NaN never wins).
pub(super) fn argmax(scores: &[f64]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] || scores[best].is_nan() && !s.is_nan() {
            best = i;
        }
    }
    best
}

/// Batch calibration (Zhou et al., "Batch Calibration", ICLR 2024) of
/// scored answers: each label's log-likelihood minus its mean over the
/// sample's scored documents, and the highest wins. A small model's raw
/// scores prefer one label for every text (SmolLM2-135M gave all 40 demo
/// documents one label, raw or calibrated against a content-free prompt);
/// relative to the sample, what each text adds decides. Answers without
/// scores (a chat backend's) are left as they are.
pub(super) fn batch_calibrate(answers: &mut HashMap<String, Answer>, labels: &[String]) {
    let scores_of = |a: &Answer| -> Option<Vec<f64>> {
        let raw: Json = serde_json::from_str(a.raw.as_deref()?).ok()?;
        let v: Vec<f64> = raw
            .get("scores")?
            .as_array()?
            .iter()
            .filter_map(Json::as_f64)
            .collect();
        (v.len() == labels.len()).then_some(v)
    };
    let scored: Vec<(String, Vec<f64>)> = answers
        .values()
        .filter_map(|a| Some((a.id.clone(), scores_of(a)?)))
        .filter(|(_, v)| v.iter().all(|x| x.is_finite()))
        .collect();
    if scored.len() < 2 {
        return;
    }
    let n = scored.len() as f64;
    let means: Vec<f64> = (0..labels.len())
        .map(|j| scored.iter().map(|(_, v)| v[j]).sum::<f64>() / n)
        .collect();
    for (id, v) in scored {
        let centred: Vec<f64> = v.iter().zip(&means).map(|(x, m)| x - m).collect();
        if let Some(a) = answers.get_mut(&id) {
            a.label = Some(labels[argmax(&centred)].clone());
        }
    }
}
