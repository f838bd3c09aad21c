#!/usr/bin/env python3
"""Builds the Hugging Face transformers goldens that flow-model's tests compare against.

Venv (any recent versions; the committed goldens were made with transformers 5, torch 2.x):
    python3 -m venv .venv-golden && .venv-golden/bin/pip install torch transformers safetensors tokenizers
Run from the repository root:
    .venv-golden/bin/python tests/golden/make_golden.py

For each architecture (qwen2, qwen3, llama, mistral) it writes tests/golden/<name>/ with:
  - a tiny RANDOM model (fixed seed, f32) saved with save_pretrained, plus a tiny byte-level BPE
    tokenizer and a ChatML chat template;
  - golden.safetensors: logits of the inputs in golden.json, the gradient of the training loss with
    respect to every parameter (`grad.<param name>`), the mean final hidden state;
  - golden.json: inputs, loss, the losses and learning rates of five AdamW steps, greedy
    generations, continuation log-likelihoods, rendered chat templates (the model's ChatML one and
    TEMPLATE_EXTRA, stored as `template_extra`).
schedules.json (top level) holds transformers' cosine and linear warmup schedules for the
schedule tests.
"""
import json
import math
import os
import shutil

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# exercises what real templates (Qwen3, Llama 3) use: namespace, loop controls, Python string
# methods (pycompat), slicing, bos_token, a raise_exception guard, whitespace control
TEMPLATE_EXTRA = (
    "{{ bos_token }}{%- set ns = namespace(sys='') -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'system' -%}{%- set ns.sys = m['content'] -%}{%- continue -%}{%- endif -%}"
    "{%- if m['role'] not in ['user', 'assistant'] -%}{{ raise_exception('bad role') }}{%- endif -%}"
    "{%- if loop.index0 > 4 -%}{%- break -%}{%- endif -%}"
    "[{{ m['role'] | upper }}{% if ns.sys %} sys={{ ns.sys.split(' ')[0] }}{% endif %}]"
    "{{ m['content'].strip().replace('a', 'A') }}{% if m['content'].startswith('Dose') %}!{% endif %}"
    "{{ m['content'][-3:] | length }}\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}\n  {{ eos_token }}{% endif %}"
)
CORPUS = [
    "The patient presented with fever and a persistent cough for three days.",
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "Blood pressure was 120/80 mmHg; heart rate 72 beats per minute.",
    "Domain adaptation of language models improves medical question answering.",
    "Take two tablets every morning with water, and rest well.",
] * 4

ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
MAX_GRAD_NORM = 1.0
WARMUP_STEPS = 2
TOTAL_STEPS = 5


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = CHATML
    return fast


def make_config(name, vocab, eos_id):
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        eos_token_id=eos_id,
        bos_token_id=None,
        pad_token_id=0,
    )
    if name == "qwen2":
        return Qwen2Config(tie_word_embeddings=True, rope_theta=10000.0, **common)
    if name == "qwen3":
        # explicit head_dim different from hidden/heads, per-head q/k norms
        return Qwen3Config(tie_word_embeddings=True, head_dim=16, rope_theta=1000000.0, **common)
    if name == "llama":
        return LlamaConfig(tie_word_embeddings=False, rope_theta=500000.0, **common)
    if name == "mistral":
        return MistralConfig(tie_word_embeddings=False, sliding_window=4, rope_theta=10000.0, **common)
    raise ValueError(name)


def randomize(model, seed):
    # initialise every parameter with visible spread (norm weights away from 1, biases nonzero)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if "norm" in name else 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def param_groups(model):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": ADAMW["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def main():
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    vocab = len(tokenizer)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = ["The patient has a fever.", "Hello world! Blood pressure was 120/80 mmHg and rising slowly."]
    inputs = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    conversations = [
        [{"role": "user", "content": "  What is a fever?  "}],
        [
            {"role": "system", "content": "You are a careful clinician."},
            {"role": "user", "content": "Dose of paracetamol?"},
            {"role": "assistant", "content": "At most 4 g a day for adults."},
        ],
    ]
    chat = []
    for conv in conversations:
        for agp in (False, True):
            chat.append(
                {
                    "messages": conv,
                    "add_generation_prompt": agp,
                    "rendered": tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=agp),
                    "rendered_extra": tokenizer.apply_chat_template(
                        conv, tokenize=False, add_generation_prompt=agp, chat_template=TEMPLATE_EXTRA
                    ),
                }
            )

    for seed, name in enumerate(["qwen2", "qwen3", "llama", "mistral"]):
        out = os.path.join(HERE, name)
        shutil.rmtree(out, ignore_errors=True)
        config = make_config(name, vocab, eos_id)
        config._attn_implementation = "eager"
        torch.manual_seed(100 + seed)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
        randomize(model, 1000 + seed)
        model.eval()
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        # one layout per place the template can live: qwen2 keeps it inside tokenizer_config.json
        tc_path = os.path.join(out, "tokenizer_config.json")
        jinja_path = os.path.join(out, "chat_template.jinja")
        with open(tc_path) as f:
            tc = json.load(f)
        if name == "qwen2":
            if os.path.exists(jinja_path):
                os.remove(jinja_path)
            tc["chat_template"] = CHATML
        elif name == "llama":
            if os.path.exists(jinja_path):
                os.remove(jinja_path)
            tc["chat_template"] = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": "unused"}]
        else:
            tc.pop("chat_template", None)
            with open(jinja_path, "w") as f:
                f.write(CHATML)
        with open(tc_path, "w") as f:
            json.dump(tc, f, indent=2)

        tensors = {}
        golden = {"inputs": inputs, "chat": chat, "template_extra": TEMPLATE_EXTRA, "eos_token_id": eos_id}
        with torch.no_grad():
            for i, ids in enumerate(inputs):
                o = model(torch.tensor([ids]), output_hidden_states=True)
                tensors[f"logits.{i}"] = o.logits[0].contiguous()
                tensors[f"mean_hidden.{i}"] = o.hidden_states[-1][0].mean(0).contiguous()
            # continuation log-likelihoods: context = first k tokens, continuation = the rest
            loglik = []
            for ids in inputs:
                k = len(ids) // 2
                lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
                cont = ids[k:]
                total = sum(lp[k - 1 + j, t].item() for j, t in enumerate(cont))
                greedy = all(lp[k - 1 + j].argmax().item() == t for j, t in enumerate(cont))
                loglik.append({"context": ids[:k], "continuation": cont, "logprob": total, "is_greedy": greedy})
            golden["loglikelihood"] = loglik
            gens = []
            for ids in inputs:
                g = model.generate(
                    torch.tensor([ids]),
                    attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                    max_new_tokens=12,
                    do_sample=False,
                    eos_token_id=eos_id,
                    pad_token_id=0,
                )
                gens.append(g[0, len(ids):].tolist())
            golden["greedy"] = gens

        # training batch: two sequences of 16 random tokens, the tail of the second ignored
        g = torch.Generator().manual_seed(7 + seed)
        batch = torch.randint(0, vocab, (2, 16), generator=g)
        labels = batch.clone()
        labels[1, 12:] = -100
        golden["train_input_ids"] = batch.tolist()
        golden["train_labels"] = labels.tolist()
        model.train()
        model.zero_grad()
        loss = model(batch, labels=labels).loss
        loss.backward()
        golden["loss"] = loss.item()
        for n, p in model.named_parameters():
            tensors[f"grad.{n}"] = p.grad.detach().clone().contiguous()

        # five AdamW steps (decay on 2-D params only), global-norm clipping, cosine warmup schedule
        model.zero_grad()
        opt = torch.optim.AdamW(param_groups(model), lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
        sched = get_cosine_schedule_with_warmup(opt, WARMUP_STEPS, TOTAL_STEPS)
        losses, lrs, norms = [], [], []
        for _ in range(TOTAL_STEPS):
            opt.zero_grad()
            loss = model(batch, labels=labels).loss
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
            losses.append(loss.item())
            norms.append(norm.item())
        golden["adamw"] = {
            **{k: v for k, v in ADAMW.items()},
            "max_grad_norm": MAX_GRAD_NORM,
            "warmup_steps": WARMUP_STEPS,
            "total_steps": TOTAL_STEPS,
            "losses": losses,
            "lrs": lrs,
            "grad_norms": norms,
        }
        save_file(tensors, os.path.join(out, "golden.safetensors"))
        with open(os.path.join(out, "golden.json"), "w") as f:
            json.dump(golden, f, indent=1)

    # transformers' schedules, for the schedule tests
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = {}
    for kind, fn in (("cosine", get_cosine_schedule_with_warmup), ("linear", get_linear_schedule_with_warmup)):
        for warmup, total in ((10, 100), (0, 7), (3, 3)):
            opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
            s = fn(opt, warmup, total)
            vals = []
            for _ in range(total):
                vals.append(opt.param_groups[0]["lr"])
                opt.step()
                s.step()
            sched[f"{kind}_{warmup}_{total}"] = vals
    del dummy
    with open(os.path.join(HERE, "schedules.json"), "w") as f:
        json.dump(sched, f, indent=1)


if __name__ == "__main__":
    main()
