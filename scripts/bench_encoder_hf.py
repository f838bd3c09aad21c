#!/usr/bin/env python3
"""The transformers side of scripts/bench_encoder.sh: documents per second of
AutoModelForSequenceClassification (eval, inference_mode, float32, all
cores) on the same documents and max_len as flow's filter, batched as a
transformers user would (tokenizer with padding to the batch's longest and
truncation to max_len, batches in corpus order)."""
import json
import os
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main(clf, docs_path, batch=32):
    info = json.load(open(os.path.join(clf, "classifier.json")))
    max_len = info["max_tokens"]
    texts = [json.loads(l)["text"] for l in open(docs_path, encoding="utf-8")]
    torch.set_num_threads(os.cpu_count())
    tok = AutoTokenizer.from_pretrained(clf)
    model = AutoModelForSequenceClassification.from_pretrained(clf).eval()
    with torch.inference_mode():  # warm-up
        model(**tok(texts[:2], truncation=True, max_length=max_len, padding=True, return_tensors="pt"))
    t = time.perf_counter()
    c = time.process_time()
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i:i + batch], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
            torch.softmax(model(**enc).logits, dim=-1)
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    print(f"BENCH transformers threads={torch.get_num_threads()} documents={len(texts)} max_len={max_len} "
          f"batch={batch} wall_docs_per_s={len(texts) / secs:.1f} docs_per_cpu_s={len(texts) / cpu:.1f} "
          f"(torch {torch.__version__}, transformers {__import__('transformers').__version__})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 32)
