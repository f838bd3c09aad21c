//! Mutation fuzzing of everything `flow` reads from users: pipeline files
//! (the front end: parse, check, format) and model files (config.json, the
//! safetensors header, GGUF, tokenizer.json). Each case starts from a real
//! file of the repository, mutated at random (bytes flipped, runs deleted,
//! duplicated or spliced, the file cut short, numbers replaced by extreme
//! values), and must give a result or an error: a panic fails the test and
//! the input is saved; an allocation abort kills the test binary, which
//! fails the run as well.
//!
//! CI runs a fixed number of cases per target (`FLOW_FUZZ_CASES`, default
//! 1000) from a fixed seed (`FLOW_FUZZ_SEED`); `scripts/fuzz.sh` runs each
//! target for a time budget (`FLOW_FUZZ_SECONDS`) from fresh seeds. This is
//! not coverage-guided fuzzing: it finds what random mutation of realistic
//! inputs finds.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo(path: &str) -> PathBuf {
    Path::new(REPO).join(path)
}

/// xorshift64*: small, seedable, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_BYTES: &[u8] = b"\x00\xff\x7f\x80[]{}()\"\\\n:,.=#0 9e-";
const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1e308",
    "-1e308",
    "1e15",
    "1099511627776",
    "18446744073709551615",
    "18446744073709551616",
    "4294967295",
    "NaN",
    "0.0000001",
];

/// One random mutation of `input` (several, stacked, sometimes).
fn mutate(rng: &mut Rng, input: &[u8], splice_from: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                data.drain(a..b);
            }
            3 if len > 0 => {
                // Duplicate a run, up to many times (deep nesting, long lines).
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                let run = data[a..b].to_vec();
                let most = if rng.below(8) == 0 { 2000 } else { 4 };
                let times = 1 + rng.below(most);
                let at = rng.below(len + 1);
                let insert: Vec<u8> = run
                    .iter()
                    .copied()
                    .cycle()
                    .take(run.len() * times)
                    .collect();
                data.splice(at..at, insert);
            }
            4 if !splice_from.is_empty() => {
                let a = rng.below(splice_from.len());
                let b = (a + 1 + rng.below(256)).min(splice_from.len());
                let at = rng.below(len + 1);
                data.splice(at..at, splice_from[a..b].iter().copied());
            }
            5 if len > 0 => data.truncate(rng.below(len)),
            6 => {
                // Replace a number (a run of digits) with an extreme one.
                let starts: Vec<usize> = (0..len)
                    .filter(|&i| {
                        data[i].is_ascii_digit() && (i == 0 || !data[i - 1].is_ascii_digit())
                    })
                    .collect();
                if !starts.is_empty() {
                    let a = starts[rng.below(starts.len())];
                    let b = (a..len).find(|&i| !data[i].is_ascii_digit()).unwrap_or(len);
                    let n = EXTREME_NUMBERS[rng.below(EXTREME_NUMBERS.len())];
                    data.splice(a..b, n.bytes());
                }
            }
            7 if len >= 8 => {
                // An extreme little-endian integer (binary headers' counts).
                let i = rng.below(len - 7);
                let v: u64 = match rng.below(4) {
                    0 => u64::MAX,
                    1 => 1 << (20 + rng.below(44)),
                    2 => u32::MAX as u64,
                    _ => rng.next(),
                };
                data[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let at = rng.below(len + 1);
                data.insert(at, INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())]);
            }
        }
    }
    data
}

/// Runs `cases` (or `FLOW_FUZZ_SECONDS` worth of) mutations of the seeds
/// through `target`, which must return (its result is ignored) and never
/// panic or take longer than `slow` on one input.
fn fuzz(name: &str, seeds: &[Vec<u8>], slow: Duration, target: impl Fn(&[u8])) {
    let cases: u64 = std::env::var("FLOW_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let seconds: Option<f64> = std::env::var("FLOW_FUZZ_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok());
    let seed: u64 = std::env::var("FLOW_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let name_hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = Rng((seed ^ name_hash) | 1);
    // Panics caught inside the code under test (the tokenizers crate's, say)
    // would flood the output; an escaping panic is reported below.
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = info.to_string();
        }
    }));
    let started = Instant::now();
    let mut done = 0u64;
    let mut slowest = Duration::ZERO;
    loop {
        let finished = match seconds {
            Some(s) => started.elapsed().as_secs_f64() >= s,
            None => done >= cases,
        };
        if finished {
            break;
        }
        let base = &seeds[rng.below(seeds.len())];
        let other = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, other);
        let t0 = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| target(&input)));
        let took = t0.elapsed();
        slowest = slowest.max(took);
        if outcome.is_err() || took > slow {
            let dir = repo("target/fuzz-failures");
            let _ = std::fs::create_dir_all(&dir);
            let file = dir.join(format!("{name}-{seed}-{done}"));
            let _ = std::fs::write(&file, &input);
            let what = if outcome.is_err() {
                format!(
                    "panicked ({})",
                    LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default()
                )
            } else {
                "took too long".to_string()
            };
            let _ = std::panic::take_hook();
            panic!(
                "fuzz target `{name}` {what} ({took:?}) on case {done} (seed {seed}); the input is in {}",
                file.display()
            );
        }
        done += 1;
    }
    println!(
        "fuzz {name}: {done} cases in {:.1}s, no panic, slowest case {slowest:?}",
        started.elapsed().as_secs_f64()
    );
}

static LAST_PANIC: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn read(path: &str) -> Vec<u8> {
    std::fs::read(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn front_end_never_panics_on_mutated_pipelines() {
    let mut seeds: Vec<Vec<u8>> = [
        "pipelines/definemed.flow",
        "pipelines/example.flow",
        "pipelines/training-dynamics.flow",
    ]
    .iter()
    .map(|p| read(p))
    .collect();
    for entry in std::fs::read_dir(repo("pipelines/definemed")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "flow") {
            seeds.push(std::fs::read(path).unwrap());
        }
    }
    let registry = flow_stdlib::registry();
    // Imports resolve against the shipped pipeline directory.
    let main = repo("pipelines/fuzzed.flow");
    fuzz("front_end", &seeds, Duration::from_secs(10), |input| {
        let text = String::from_utf8_lossy(input);
        if let Err(d) = flow_engine::lang::load_str(&main, &text, &[], &registry) {
            let _ = d.render();
        }
        if let Err(d) = flow_engine::lang::format(&main, &text) {
            let _ = d.render();
        }
    });
}

/// A model directory with the golden model's files, one of them replaced.
fn model_dir_with(file: &str, bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(repo("tests/golden/qwen2").join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join(file), bytes).unwrap();
    dir
}

#[test]
fn config_json_never_panics_or_aborts() {
    let seeds: Vec<Vec<u8>> = ["qwen2", "qwen3", "llama", "mistral"]
        .iter()
        .map(|m| read(&format!("tests/golden/{m}/config.json")))
        .collect();
    fuzz("config_json", &seeds, Duration::from_secs(10), |input| {
        let dir = model_dir_with("config.json", input);
        let _ = flow_model::Model::load(dir.path());
    });
}

#[test]
fn safetensors_header_never_panics_or_aborts() {
    let whole = read("tests/golden/qwen2/model.safetensors");
    // Mutations land in the header: the JSON at the front and its length.
    let header_len = u64::from_le_bytes(whole[..8].try_into().unwrap()) as usize;
    let (head, body) = whole.split_at(8 + header_len);
    let body = body.to_vec();
    fuzz(
        "safetensors_header",
        &[head.to_vec()],
        Duration::from_secs(10),
        |input| {
            let mut file = input.to_vec();
            file.extend_from_slice(&body);
            let dir = model_dir_with("model.safetensors", &file);
            let _ = flow_model::Model::load(dir.path());
        },
    );
}

#[test]
fn gguf_never_panics_or_aborts() {
    let seeds = [
        read("tests/golden/gguf/tiny_llama.gguf"),
        read("tests/golden/gguf/tiny_qwen2.gguf"),
    ];
    // Most of a GGUF is tensor data; mutate the header and metadata part
    // (the first 16 KiB) more often than not.
    let heads: Vec<Vec<u8>> = seeds.iter().map(|s| s[..16 << 10].to_vec()).collect();
    let tails: Vec<Vec<u8>> = seeds.iter().map(|s| s[16 << 10..].to_vec()).collect();
    let out = tempfile::tempdir().unwrap();
    fuzz("gguf", &heads, Duration::from_secs(20), |input| {
        let mut file = input.to_vec();
        file.extend_from_slice(&tails[input.len() % tails.len()]);
        let path = out.path().join("in.gguf");
        std::fs::write(&path, &file).unwrap();
        let _ = std::fs::remove_dir_all(out.path().join("o"));
        let _ = flow_model::gguf::import_gguf(&path, &out.path().join("o"));
    });
}

#[test]
fn tokenizer_json_never_panics_or_aborts() {
    let seeds: Vec<Vec<u8>> = ["qwen2", "llama"]
        .iter()
        .map(|m| read(&format!("tests/golden/{m}/tokenizer.json")))
        .collect();
    fuzz("tokenizer_json", &seeds, Duration::from_secs(10), |input| {
        let dir = model_dir_with("tokenizer.json", input);
        if let Ok(t) = flow_model::Tokenizer::load(dir.path()) {
            if let Ok(ids) = t.encode("Hallo Welt! Blutdruck 120/80 mmHg, Äpfel.", true) {
                let _ = t.decode(&ids, false);
            }
            let _ = t.decode(&[0, 1, 2, 3, u32::MAX], true);
        }
    });
}
