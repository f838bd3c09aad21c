#!/usr/bin/env python3
"""Golden values for flow-kernels' AdamW, made with torch.optim.AdamW.

Venv:  python3 -m venv venv && venv/bin/pip install torch numpy
Run:   venv/bin/python scripts/make_kernel_golden.py
Writes tests/golden/kernels/adamw.json: for each configuration, the initial
parameter, the gradient of each of 5 steps, and the parameter and both
moments after every step. Values are float32 numbers printed exactly.
"""
import json
import os

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "kernels", "adamw.json")

CONFIGS = [
    dict(name="decay", lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, n=64, seed=1),
    dict(name="no_decay_large_lr", lr=3e-2, betas=(0.8, 0.999), eps=1e-6, weight_decay=0.0, n=37, seed=2),
]
STEPS = 5


def f32_list(t):
    return [float(x) for x in t.detach().to(torch.float32).reshape(-1).tolist()]


def run(cfg):
    g = torch.Generator().manual_seed(cfg["seed"])
    p = torch.nn.Parameter(torch.randn(cfg["n"], generator=g, dtype=torch.float32))
    init = f32_list(p)
    opt = torch.optim.AdamW(
        [p], lr=cfg["lr"], betas=cfg["betas"], eps=cfg["eps"], weight_decay=cfg["weight_decay"], foreach=False
    )
    steps = []
    for step in range(1, STEPS + 1):
        # gradients of varied scale, including tiny ones where eps matters
        grad = torch.randn(cfg["n"], generator=g, dtype=torch.float32) * (10.0 ** (step - 3))
        p.grad = grad.clone()
        opt.step()
        st = opt.state[p]
        steps.append(
            dict(step=step, grad=f32_list(grad), param=f32_list(p), exp_avg=f32_list(st["exp_avg"]),
                 exp_avg_sq=f32_list(st["exp_avg_sq"]))
        )
    return dict(name=cfg["name"], lr=cfg["lr"], beta1=cfg["betas"][0], beta2=cfg["betas"][1], eps=cfg["eps"],
                weight_decay=cfg["weight_decay"], init=init, steps=steps)


def main():
    doc = dict(source=f"torch.optim.AdamW (torch {torch.__version__}, foreach=False)",
               configs=[run(c) for c in CONFIGS])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    os.replace(tmp, OUT)
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
