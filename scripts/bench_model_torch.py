#!/usr/bin/env python3
"""PyTorch side of scripts/bench_model.sh: tokens/s of the forward pass, of a training step
(forward + backward + AdamW) and of greedy decoding with HF `generate` (batch 1, new tokens per
second of the whole `generate` call, prompt included) on the SmolLM2-135M shape with random
weights, CPU, f32.

Venv (made only for this benchmark):
    python3 -m venv .venv-bench && .venv-bench/bin/pip install torch transformers
"""
import argparse
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--fwd-batch", type=int, default=2)
    ap.add_argument("--train-batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--decode-prompt", type=int, default=32)
    ap.add_argument("--decode-tokens", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=a.layers, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0,
        max_position_embeddings=8192, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).float()
    print(f"pytorch {torch.__version__}: SmolLM2-135M shape ({a.layers} layers), seq {a.seq}, {torch.get_num_threads()} threads")
    ids = torch.randint(0, 49152, (max(a.fwd_batch, a.train_batch), a.seq))

    model.eval()
    best = float("inf")
    with torch.no_grad():
        for r in range(a.reps + 1):
            t0 = time.perf_counter()
            model(ids[: a.fwd_batch]).logits
            dt = time.perf_counter() - t0
            if r > 0:
                best = min(best, dt)
    print(f"RESULT torch forward tokens/s {a.fwd_batch * a.seq / best:.1f} (batch {a.fwd_batch}x{a.seq}, best of {a.reps}: {best:.3}s)")

    if a.decode_tokens > 0:
        prompt = ids[:1, : a.decode_prompt]

        def time_decode(m):
            best = float("inf")
            with torch.no_grad():
                for r in range(a.reps + 1):
                    t0 = time.perf_counter()
                    out = m.generate(
                        prompt, max_new_tokens=a.decode_tokens, min_new_tokens=a.decode_tokens,
                        do_sample=False, pad_token_id=0,
                    )
                    dt = time.perf_counter() - t0
                    assert out.shape[1] == a.decode_prompt + a.decode_tokens
                    if r > 0:
                        best = min(best, dt)
            return best

        best = time_decode(model)
        print(f"RESULT torch decode tokens/s {a.decode_tokens / best:.1f} (HF generate, greedy, f32 weights, prompt {a.decode_prompt}, {a.decode_tokens} new tokens, best of {a.reps}: {best:.3}s)")
        # the same weights in bf16 (a copy: the f32 model trains below)
        import copy
        best = time_decode(copy.deepcopy(model).to(torch.bfloat16))
        print(f"RESULT torch decode-bf16 tokens/s {a.decode_tokens / best:.1f} (HF generate, greedy, bf16 weights, prompt {a.decode_prompt}, {a.decode_tokens} new tokens, best of {a.reps}: {best:.3}s)")

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    batch = ids[: a.train_batch]
    best = float("inf")
    for r in range(a.reps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if r > 0:
            best = min(best, dt)
    print(f"RESULT torch train tokens/s {a.train_batch * a.seq / best:.1f} (batch {a.train_batch}x{a.seq}, best of {a.reps}: {best:.3}s)")


if __name__ == "__main__":
    main()
