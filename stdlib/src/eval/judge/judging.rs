//! Judging every shared prompt in both orders, with failure accounting.

use super::*;

/// Failed requests whose message goes into the log (the rest are counted).
const LOGGED_FAILURES: usize = 5;

/// Judges every shared prompt in both orders; returns verdict lines and the
/// summary. Prompts with a failed request are left out of the lines and
/// counted; more than `max_failures` of them, or a refused key, is an error.
#[allow(clippy::too_many_arguments)]
pub fn run_judging(
    ctx: &OpContext,
    backend: &dyn ChatBackend,
    template: &JudgeTemplate,
    a: &Responses,
    b: &Responses,
    names: (&str, &str),
    max_tokens: usize,
    max_failures: usize,
) -> OpResult<(Vec<Verdict>, JudgeSummary)> {
    let workers = backend.concurrency().max(1);
    let shared: Vec<&String> = a
        .ids
        .iter()
        .filter(|id| b.items.contains_key(*id))
        .collect();
    let missing = a.ids.len() + b.ids.len() - 2 * shared.len();
    if missing > 0 {
        ctx.log(&format!(
            "warning: {missing} prompts were answered by only one model and are not judged"
        ));
    }
    if shared.is_empty() {
        return Err(miette!(
            help = "both generate nodes must answer the same prompt file",
            "the two response sets share no prompt id"
        ));
    }
    ctx.progress
        .set_total(shared.len() as u64 * 2, "judgements");
    // Work items: (prompt index, swapped?).
    let jobs: Vec<(usize, bool)> = (0..shared.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();
    let answers: Mutex<Vec<Option<Result<String, ChatError>>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    let render_err: Mutex<Option<String>> = Mutex::new(None);
    // prompts with a failed request; past the tolerance the workers stop
    let failed_prompts: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());
    let failed_requests = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| loop {
                if ctx.cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    return;
                }
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, swapped)) = jobs.get(k) else {
                    return;
                };
                let id = shared[i];
                let (ra, rb) = (&a.items[id], &b.items[id]);
                let (first, second) = if swapped {
                    (&rb.response, &ra.response)
                } else {
                    (&ra.response, &rb.response)
                };
                let msgs = match template.render(ra, first, second) {
                    Ok(m) => m,
                    Err(e) => {
                        *render_err.lock().expect("lock") = Some(format!("prompt {id}: {e}"));
                        return;
                    }
                };
                let req = ChatRequest {
                    messages: msgs,
                    max_tokens,
                    temperature: 0.0,
                    json_schema: Some(answer_schema()),
                };
                // A backend that can score answers (the local runtime)
                // picks the most likely of the three verdicts: small models
                // rarely write the requested JSON.
                let options: Vec<String> = ["A", "B", "0"]
                    .iter()
                    .map(|w| json!({ "winner": w }).to_string())
                    .collect();
                let ans = match backend.choose(&req.messages, &options) {
                    Some(r) => r,
                    None => backend.chat(&req),
                };
                if let Err(e) = &ans {
                    let n = failed_requests.fetch_add(1, Ordering::Relaxed) + 1;
                    if n <= LOGGED_FAILURES {
                        // the backend redacted the key from this text
                        ctx.log(&format!("prompt {id}: judge request failed: {e}"));
                    }
                    let mut failed = failed_prompts.lock().expect("lock");
                    failed.insert(i);
                    if e.is_unauthorized() || failed.len() > max_failures {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                answers.lock().expect("lock")[k] = Some(ans);
                ctx.progress.inc(1);
            });
        }
    });
    ctx.check_cancelled()?;
    if let Some(e) = render_err.into_inner().expect("lock") {
        return Err(miette!("judge template: {e}"));
    }
    let answers = answers.into_inner().expect("lock");
    let errors: Vec<&ChatError> = answers
        .iter()
        .filter_map(|a| a.as_ref().and_then(|r| r.as_ref().err()))
        .collect();
    let failed = failed_prompts.into_inner().expect("lock").len();
    if let Some(refused) = errors.iter().find(|e| e.is_unauthorized()) {
        return Err(miette!(
            help = "nothing is stored; fix the key and run again",
            "judge: {refused}"
        ));
    }
    if failed > max_failures {
        let last = errors.last().map(|e| e.to_string()).unwrap_or_default();
        return Err(miette!(
            help = "nothing is stored; raise max_failures to tolerate some failed prompts",
            "judge: {failed} prompts had a failed request, more than max_failures = {max_failures}; e.g. {last}"
        ));
    }
    let mut failed_examples = Vec::new();
    let mut lines = Vec::new();
    let (mut wins, mut ties, mut losses, mut unparseable, mut inconsistent) = (0, 0, 0, 0, 0);
    for (i, id) in shared.iter().enumerate() {
        let mut orders = Vec::new();
        let mut parsed = Vec::new();
        let mut prompt_failed = false;
        for k in [2 * i, 2 * i + 1] {
            let raw = match &answers[k] {
                Some(Ok(t)) => t.clone(),
                Some(Err(e)) => {
                    // class and status only: the server's text may echo the key
                    if failed_examples.len() < 20 {
                        failed_examples.push(e.failed_request(id));
                    }
                    prompt_failed = true;
                    continue;
                }
                None => {
                    // not asked: the run was cancelled or stopped, both errors above
                    prompt_failed = true;
                    continue;
                }
            };
            let w = parse_winner(&raw);
            parsed.push(w);
            orders.push(OrderVerdict {
                winner: w.map(str::to_owned),
                raw,
            });
        }
        if prompt_failed {
            continue;
        }
        let (winner, consistent) = combine(parsed[0], parsed[1]);
        match winner {
            None => unparseable += 1,
            Some("A") => wins += 1,
            Some("B") => losses += 1,
            Some(_) => {
                ties += 1;
                if !consistent {
                    inconsistent += 1;
                }
            }
        }
        let [a_first, b_first]: [OrderVerdict; 2] = orders
            .try_into()
            .map_err(|_| miette!("internal: prompt {id} has not two verdicts"))?;
        lines.push(Verdict {
            id: (*id).clone(),
            model_a: names.0.to_owned(),
            model_b: names.1.to_owned(),
            winner: winner.map(str::to_owned),
            consistent,
            a_first,
            b_first,
            checkpoint_a: a.checkpoint.clone(),
            checkpoint_b: b.checkpoint.clone(),
        });
    }
    if failed > 0 {
        ctx.log(&format!(
            "warning: {failed} prompts ({} requests) failed and are left out of verdicts.jsonl (max_failures = {max_failures})",
            errors.len()
        ));
    }
    let judged = wins + ties + losses;
    let ratio = |x: f64| (judged > 0).then(|| x / judged as f64);
    let summary = JudgeSummary {
        model_a: names.0.to_owned(),
        model_b: names.1.to_owned(),
        wins,
        ties,
        losses,
        unparseable,
        inconsistent,
        failed,
        failed_requests: errors.len(),
        max_failures,
        failed_examples,
        n: shared.len(),
        win_rate: ratio(wins as f64),
        score: ratio(wins as f64 + ties as f64 / 2.0),
        judge: backend.describe(),
        checkpoint_a: a.checkpoint.clone(),
        checkpoint_b: b.checkpoint.clone(),
    };
    Ok((lines, summary))
}
