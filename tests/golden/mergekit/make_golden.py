#!/usr/bin/env python3
"""Builds the SLERP goldens that flow's `slerp` merge op is checked against.

Two tiny random LlamaForCausalLM models with the same config are saved under
`base/` and `other/`, then mergekit merges them with `slerp` (a `t` list that
is interpolated over the layers, per-tensor filters, a fallback) and the
merged tensors land in `merged/` (and `*_tied/` for tied embeddings).

mergekit normalises each tensor as a whole (0.1.5 batches several output
tensors along a leading axis, each still one vector); flow's `slerp` does
the same.

Environment (CPU is enough):
    python -m venv venv && venv/bin/pip install mergekit==0.1.5 transformers torch
Run from the repository root:
    venv/bin/python tests/golden/mergekit/make_golden.py
"""

import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIG_YAML = """\
merge_method: slerp
base_model: {base}
models:
  - model: {base}
  - model: {other}
parameters:
  t:
    - filter: self_attn
      value: [0.0, 0.5, 0.3, 1.0]
    - filter: mlp
      value: [1.0, 0.5, 0.0]
    - value: [0.2, 0.7]
dtype: float32
"""


def build_models(tie: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=5,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tie,
    )
    suffix = "_tied" if tie else ""
    for name, seed in (("base", 1), ("other", 2)):
        torch.manual_seed(seed + (10 if tie else 0))
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for p in model.parameters():
                # Norm weights start at exactly 1.0 in both models, which would
                # only exercise the linear branch; randomise everything.
                p.copy_(torch.randn_like(p) * 0.5)
        model.save_pretrained(os.path.join(HERE, name + suffix), safe_serialization=True)
    # One row of the base's q_proj in layer 2 is made parallel to the other's
    # (up to 1e-4) and one row exactly zero: the merge must not treat rows
    # on their own.
    import safetensors.torch as st

    b = os.path.join(HERE, "base" + suffix, "model.safetensors")
    o = os.path.join(HERE, "other" + suffix, "model.safetensors")
    tb, to = st.load_file(b), st.load_file(o)
    key = "model.layers.2.self_attn.q_proj.weight"
    tb[key][3] = to[key][3] * 2.0 + 1e-4
    tb[key][5] = 0.0
    st.save_file(tb, b, metadata={"format": "pt"})


def run_merge(suffix: str, pythonpath: str | None) -> None:
    cfg_path = os.path.join(HERE, f"config{suffix}.yaml")
    with open(cfg_path, "w") as f:
        f.write(CONFIG_YAML.format(base=os.path.join(HERE, "base" + suffix),
                                   other=os.path.join(HERE, "other" + suffix)))
    out = os.path.join(HERE, f"merged{suffix}")
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    code = (
        "import sys; from mergekit.scripts.run_yaml import main; "
        "sys.argv = ['mergekit-yaml'] + sys.argv[1:]; main()"
    )
    subprocess.run([sys.executable, "-c", code, cfg_path, out], check=True, env=env)
    # Keep only what the Rust tests read.
    for f in os.listdir(out):
        if not (f.endswith(".safetensors") or f.endswith(".json")):
            os.remove(os.path.join(out, f))
    # The config with absolute paths is not needed in the repository.
    os.remove(cfg_path)
    with open(os.path.join(out, "golden_meta.json"), "w") as f:
        ver = subprocess.run(
            [sys.executable, "-c", "import importlib.metadata as m; print(m.version('mergekit'))"],
            capture_output=True, text=True, env=env, check=True).stdout.strip()
        json.dump({"mergekit": ver, "config": CONFIG_YAML}, f, indent=1)


def main() -> None:
    for tie in (False, True):
        build_models(tie)
    run_merge("", None)
    run_merge("_tied", None)


if __name__ == "__main__":
    main()
