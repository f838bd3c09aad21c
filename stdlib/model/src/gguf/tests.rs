//! Tests of the GGUF importer against tiny files made with the `gguf`
//! Python package (scripts/make_gguf_golden.py): dequantised tensors must
//! match `gguf.quants.dequantize` (after undoing the Q/K permutation with
//! numpy), token ids must match the `tokenizers` library, and corrupt
//! variants must give errors naming the file and the problem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::*;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden/gguf")
        .join(name)
}

fn read_f32(st: &safetensors::SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (t.shape().to_vec(), v)
}

fn check_import(name: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("model");
    let summary = import_gguf(&golden(&format!("{name}.gguf")), &out).expect("import");
    let exp: Json = serde_json::from_str(
        &std::fs::read_to_string(golden(&format!("{name}.expected.json"))).unwrap(),
    )
    .unwrap();

    // tensors: same names, shapes and values as gguf-py's dequantisation
    let want_bytes = std::fs::read(golden(&format!("{name}.expected.safetensors"))).unwrap();
    let want = safetensors::SafeTensors::deserialize(&want_bytes).unwrap();
    let got_bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let got = safetensors::SafeTensors::deserialize(&got_bytes).unwrap();
    let mut want_names: Vec<_> = want.names().into_iter().map(String::from).collect();
    let mut got_names: Vec<_> = got.names().into_iter().map(String::from).collect();
    want_names.sort();
    got_names.sort();
    assert_eq!(got_names, want_names, "{name}: tensor names");
    for n in &want_names {
        let (ws, wv) = read_f32(&want, n);
        let (gs, gv) = read_f32(&got, n);
        assert_eq!(gs, ws, "{name}: shape of {n}");
        let scale = wv.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        let err = gv
            .iter()
            .zip(&wv)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err <= 1e-6 * scale,
            "{name}: {n} differs by {err} (scale {scale})"
        );
    }

    // config.json
    let cfg: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["architectures"][0], exp["hf_architecture"],
        "{name}: architectures"
    );
    for (k, v) in exp["config"].as_object().unwrap() {
        assert_eq!(&cfg[k], v, "{name}: config.json {k}");
    }

    // summary
    assert_eq!(summary.architecture, exp["architecture"].as_str().unwrap());
    assert_eq!(summary.tensors, want_names.len());
    assert_eq!(
        summary.vocab_size as u64,
        exp["config"]["vocab_size"].as_u64().unwrap()
    );
    assert_eq!(
        summary.tied_embeddings,
        exp["config"]["tie_word_embeddings"].as_bool().unwrap()
    );
    let types: BTreeMap<String, usize> = exp["source_types"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize))
        .collect();
    assert_eq!(summary.source_types, types, "{name}: source types");
    let params: u64 = want_names
        .iter()
        .map(|n| read_f32(&want, n).1.len() as u64)
        .sum();
    assert_eq!(summary.parameters, params);

    // tokenizer: ids equal to the reference `tokenizers` encodings
    let tok =
        tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).expect("tokenizer.json loads");
    for e in exp["encodings"].as_array().unwrap() {
        let text = e["text"].as_str().unwrap();
        let ids: Vec<u32> = e["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let enc = tok.encode(text, false).expect("encode");
        assert_eq!(enc.get_ids(), &ids[..], "{name}: encoding of {text:?}");
        let dec = tok.decode(&ids, false).expect("decode");
        assert_eq!(dec, text, "{name}: decode round trip");
    }
    let tc: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert_eq!(tc["chat_template"], exp["chat_template"]);
    for k in ["bos_token", "eos_token", "pad_token"] {
        assert_eq!(tc[k], exp["tokens"][k], "{name}: tokenizer_config {k}");
    }
    let gen: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("generation_config.json")).unwrap())
            .unwrap();
    assert_eq!(gen["eos_token_id"], exp["config"]["eos_token_id"]);
    // no temporary files left behind
    for f in std::fs::read_dir(&out).unwrap() {
        let n = f.unwrap().file_name().to_string_lossy().to_string();
        assert!(!n.ends_with(".tmp"), "left {n}");
    }
}

#[test]
fn tiny_llama_import_matches_gguf_py_and_tokenizers() {
    check_import("tiny_llama");
}

#[test]
fn tiny_qwen2_import_tied_with_biases_matches_gguf_py() {
    check_import("tiny_qwen2");
}

/// convert_hf_to_gguf.py's permute, written independently of the importer.
fn llama_cpp_permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    // reshape (heads, 2, half, cols) → swap axes 1,2 → (heads, half, 2, cols)
    let half = rows / heads / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for two in 0..2 {
            for i in 0..half {
                let src = ((h * 2 + two) * half + i) * cols;
                let dst = ((h * half + i) * 2 + two) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

#[test]
fn unpermute_inverts_llama_cpp_permute() {
    let (rows, cols, heads) = (24, 3, 3);
    let w: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
    let p = llama_cpp_permute(&w, rows, cols, heads);
    assert_ne!(p, w);
    assert_eq!(unpermute_rows(&p, rows, heads).unwrap(), w);
    assert!(unpermute_rows(&p, 25, heads).is_err());
}

/// Writes `bytes` as a GGUF file in `dir` and imports it, expecting an error.
fn import_bytes(dir: &Path, bytes: &[u8]) -> (PathBuf, GgufError) {
    let path = dir.join("broken.gguf");
    std::fs::write(&path, bytes).unwrap();
    let err = import_gguf(&path, &dir.join("out")).expect_err("corrupt file must fail");
    (path, err)
}

/// Offset of the type field of tensor `name` in the tensor-info table.
fn type_field(bytes: &[u8], name: &str) -> usize {
    let needle = name.as_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("tensor name in file");
    let after = at + needle.len();
    let n_dims = u32::from_le_bytes(bytes[after..after + 4].try_into().unwrap()) as usize;
    after + 4 + 8 * n_dims
}

#[test]
fn corrupt_files_give_errors_naming_file_and_problem() {
    let good = std::fs::read(golden("tiny_llama.gguf")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expect = |bytes: &[u8], kind: &str, needle: &str| {
        let (path, err) = import_bytes(dir.path(), bytes);
        let msg = err.to_string();
        assert!(
            msg.contains(&path.display().to_string()),
            "error must name the file: {msg}"
        );
        assert!(msg.contains(needle), "expected `{needle}` in: {msg}");
        let k = match err {
            GgufError::Malformed { .. } => "malformed",
            GgufError::Unsupported { .. } => "unsupported",
            GgufError::Io { .. } => "io",
            GgufError::Output { .. } => "output",
        };
        assert_eq!(k, kind, "{msg}");
    };

    let mut b = good.clone();
    b[0..4].copy_from_slice(b"GGML");
    expect(&b, "malformed", "bad magic");

    let mut b = good.clone();
    b[4..8].copy_from_slice(&99u32.to_le_bytes());
    expect(&b, "malformed", "unsupported GGUF version 99");

    expect(&good[..3], "malformed", "truncated");
    expect(&good[..200], "malformed", "truncated"); // inside the metadata
    expect(&good[..good.len() - 100], "malformed", "out of bounds"); // inside the tensor data

    let mut b = good.clone();
    let ty = type_field(&b, "blk.0.attn_q.weight");
    b[ty..ty + 4].copy_from_slice(&77u32.to_le_bytes());
    expect(&b, "unsupported", "quantisation type type 77");

    let mut b = good.clone();
    let ty = type_field(&b, "blk.0.attn_q.weight");
    b[ty..ty + 4].copy_from_slice(&13u32.to_le_bytes()); // Q5_K: known to ggml, not to us
    expect(&b, "unsupported", "Q5_K");

    let mut b = good.clone();
    let off = type_field(&b, "output_norm.weight") + 4;
    b[off..off + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    expect(&b, "malformed", "`output_norm.weight` data out of bounds");

    // Adversarial run, issue 12 item 9: a 24-byte header claiming 2^28
    // tensors asked for 16 GiB of tensor infos before the first read failed.
    let mut tiny = b"GGUF".to_vec();
    tiny.extend(3u32.to_le_bytes());
    tiny.extend((1u64 << 28).to_le_bytes()); // tensor count
    tiny.extend(0u64.to_le_bytes()); // metadata count
    expect(&tiny, "malformed", "implausible tensor count 268435456");
    // An array claiming more elements than the rest of the file holds.
    let mut arr = b"GGUF".to_vec();
    arr.extend(3u32.to_le_bytes());
    arr.extend(0u64.to_le_bytes());
    arr.extend(1u64.to_le_bytes());
    arr.extend(1u64.to_le_bytes());
    arr.push(b'k');
    arr.extend(9u32.to_le_bytes()); // array
    arr.extend(8u32.to_le_bytes()); // of strings
    arr.extend(1_000_000u64.to_le_bytes());
    arr.extend([0u8; 64]);
    expect(&arr, "malformed", "implausible array length of `k` 1000000");

    let missing = dir.path().join("missing.gguf");
    let err = import_gguf(&missing, &dir.path().join("o2")).expect_err("missing file");
    assert!(matches!(err, GgufError::Io { .. }));
    assert!(err.to_string().contains("missing.gguf"));
}
