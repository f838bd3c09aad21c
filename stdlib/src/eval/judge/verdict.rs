//! Reading a judge's answer and combining the verdicts of both orders.

use super::*;

/// The winner a judge's answer names ("A", "B" or "0"), if it can be read:
/// the first JSON object with a `winner` field, else a `"winner": "X"` pair.
pub fn parse_winner(answer: &str) -> Option<&'static str> {
    let norm = |s: &str| match s.trim() {
        "A" | "a" => Some("A"),
        "B" | "b" => Some("B"),
        "0" | "tie" | "Tie" | "TIE" => Some("0"),
        _ => None,
    };
    // JSON objects anywhere in the answer (e.g. inside a ```json fence).
    let bytes = answer.as_bytes();
    let mut start = 0;
    while let Some(off) = answer[start..].find('{') {
        let open = start + off;
        let mut depth = 0usize;
        let mut in_str = false;
        let mut escape = false;
        let mut end = None;
        for (k, &c) in bytes[open..].iter().enumerate() {
            if in_str {
                match c {
                    _ if escape => escape = false,
                    b'\\' => escape = true,
                    b'"' => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                b'"' => in_str = true,
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(open + k + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        if let Ok(v) = serde_json::from_str::<Json>(&answer[open..end]) {
            match v.get("winner") {
                Some(Json::String(s)) => return norm(s),
                Some(Json::Number(n)) if n.as_i64() == Some(0) => return Some("0"),
                _ => {}
            }
        }
        start = open + 1;
    }
    let idx = answer.find("\"winner\"")?;
    let rest = answer[idx + 8..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let rest = rest.strip_prefix('"')?;
    let close = rest.find('"')?;
    norm(&rest[..close])
}

/// Combines the verdicts of the two orders into the winner in terms of the
/// models (A = model a): inconsistent verdicts are a tie.
pub fn combine(first: Option<&str>, swapped: Option<&str>) -> (Option<&'static str>, bool) {
    let (Some(x), Some(y)) = (first, swapped) else {
        return (None, false);
    };
    // In the swapped order "A" is model b.
    let y_for_a = match y {
        "A" => "B",
        "B" => "A",
        _ => "0",
    };
    let x: &'static str = match x {
        "A" => "A",
        "B" => "B",
        _ => "0",
    };
    if x == y_for_a {
        (Some(x), true)
    } else {
        (Some("0"), false)
    }
}
