#!/usr/bin/env python3
"""Tiny GGUF files for flow's GGUF importer tests, with their expected HF
tensors computed by the `gguf` package's own dequantisation.

Venv:  python3 -m venv venv && venv/bin/pip install gguf numpy safetensors tokenizers
Run:   venv/bin/python scripts/make_gguf_golden.py
Writes tests/golden/gguf/:
  tiny_llama.gguf             llama arch, untied lm_head, Q/K rows permuted the
                              way convert_hf_to_gguf.py does, tensors in F32,
                              F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K
  tiny_qwen2.gguf             qwen2 arch, tied embeddings, q/k/v biases, no permutation
  <name>.expected.safetensors the HF-named f32 tensors the import must produce
  <name>.expected.json        hyper-parameters, special tokens and reference
                              token ids from the `tokenizers` library
Q4_K and Q6_K blocks are random bytes (gguf-py cannot quantise to them) with
small f16 scales; their expected values come from gguf.quants.dequantize.
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers, normalizers, Regex

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "golden", "gguf")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The patient was given 250 mg of amoxicillin twice daily.",
    "Hello world! Hello there, how are you doing today?",
    "Blood pressure 120/80, heart rate 72 bpm; no fever.",
    "def main():\n    print('hello')\n",
    "The quick brown fox jumps over the lazy dog. It's 2024, isn't it?",
] * 20
PROBES = [
    "Hello world! The patient was given 1250 mg.",
    "  leading spaces and\ttabs\nnew lines",
    "<|im_start|>user\nIt's fine<|im_end|>",
    "Ünïcödé and émojis 🙂",
]
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"


def pre_tokenizer(kind):
    if kind == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def train_tokenizer(kind):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(kind)
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tok, tokens, merges


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half → GGUF interleaved rows)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_kquant(rng, rows, cols, qtype):
    """Random but well-scaled Q4_K / Q6_K blocks as raw bytes (rows, bytes per row)."""
    nb = cols // 256
    if qtype == Q.Q4_K:
        blocks = rng.integers(0, 256, size=(rows * nb, 144), dtype=np.uint8)
        blocks[:, 0:2] = np.float16(rng.uniform(0.001, 0.004, rows * nb)).view(np.uint8).reshape(-1, 2)
        blocks[:, 2:4] = np.float16(rng.uniform(0.001, 0.004, rows * nb)).view(np.uint8).reshape(-1, 2)
        return blocks.reshape(rows, nb * 144)
    blocks = rng.integers(0, 256, size=(rows * nb, 210), dtype=np.uint8)
    blocks[:, 192:208] = rng.integers(-40, 40, size=(rows * nb, 16)).astype(np.int8).view(np.uint8)
    blocks[:, 208:210] = np.float16(rng.uniform(0.0002, 0.0008, rows * nb)).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(rows, nb * 210)


def make(name, arch, kind, tied, bias, types):
    rng = np.random.default_rng(7 if arch == "llama" else 11)
    tok, tokens, merges = train_tokenizer(kind)
    vocab, hidden, inter, layers, heads, kv_heads = len(tokens), 64, 256, 2, 4, 2
    head_dim = hidden // heads
    eps, theta, ctx = 1e-5, 10000.0 if arch == "llama" else 1000000.0, 512

    w = GGUFWriter(os.path.join(OUT, f"{name}.gguf"), arch)
    w.add_block_count(layers)
    w.add_context_length(ctx)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(eps)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(kind)
    w.add_token_list(tokens)
    w.add_token_types([TokenType.CONTROL if t in SPECIALS else TokenType.NORMAL for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|im_start|>"))
    w.add_eos_token_id(tokens.index("<|im_end|>"))
    w.add_pad_token_id(tokens.index("<|endoftext|>"))
    w.add_unk_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)

    expected = {}

    def add(gguf_name, hf_name, shape, qtype, permute_heads=None):
        rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
        if qtype in (Q.Q4_K, Q.Q6_K):
            raw = random_kquant(rng, rows, cols, qtype)
            deq = dequantize(raw, qtype).reshape(shape).astype(np.float32)
            w.add_tensor(gguf_name, raw, raw_shape=raw.shape, raw_dtype=qtype)
            hf = deq if permute_heads is None else unpermute(deq, permute_heads)
        else:
            scale = 1.0 if len(shape) == 1 else 1.0 / np.sqrt(cols)
            orig = (rng.standard_normal(shape) * scale).astype(np.float32)
            if len(shape) == 1:
                orig = (1.0 + 0.1 * orig).astype(np.float32)
            stored = orig if permute_heads is None else permute(orig, permute_heads)
            q = quantize(stored, qtype)
            deq = dequantize(q, qtype).reshape(shape).astype(np.float32)
            if qtype in (Q.F32, Q.F16):
                w.add_tensor(gguf_name, q)
            else:
                w.add_tensor(gguf_name, q, raw_shape=q.shape, raw_dtype=qtype)
            hf = deq if permute_heads is None else unpermute(deq, permute_heads)
        expected[hf_name] = np.ascontiguousarray(hf)

    add("token_embd.weight", "model.embed_tokens.weight", (vocab, hidden), types["embd"])
    for l in range(layers):
        t = types["layers"][l]
        p = f"blk.{l}."
        h = f"model.layers.{l}."
        perm = arch == "llama"
        add(p + "attn_norm.weight", h + "input_layernorm.weight", (hidden,), Q.F32)
        add(p + "attn_q.weight", h + "self_attn.q_proj.weight", (heads * head_dim, hidden), t["q"], heads if perm else None)
        add(p + "attn_k.weight", h + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden), t["k"], kv_heads if perm else None)
        add(p + "attn_v.weight", h + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden), t["v"])
        if bias:
            add(p + "attn_q.bias", h + "self_attn.q_proj.bias", (heads * head_dim,), Q.F32)
            add(p + "attn_k.bias", h + "self_attn.k_proj.bias", (kv_heads * head_dim,), Q.F32)
            add(p + "attn_v.bias", h + "self_attn.v_proj.bias", (kv_heads * head_dim,), Q.F32)
        add(p + "attn_output.weight", h + "self_attn.o_proj.weight", (hidden, heads * head_dim), t["o"])
        add(p + "ffn_norm.weight", h + "post_attention_layernorm.weight", (hidden,), Q.F32)
        add(p + "ffn_gate.weight", h + "mlp.gate_proj.weight", (inter, hidden), t["gate"])
        add(p + "ffn_up.weight", h + "mlp.up_proj.weight", (inter, hidden), t["up"])
        add(p + "ffn_down.weight", h + "mlp.down_proj.weight", (hidden, inter), t["down"])
    add("output_norm.weight", "model.norm.weight", (hidden,), Q.F32)
    if not tied:
        add("output.weight", "lm_head.weight", (vocab, hidden), types["out"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    save_file(expected, os.path.join(OUT, f"{name}.expected.safetensors"))
    meta = {
        "architecture": arch,
        "hf_architecture": "LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM",
        "config": {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter,
                   "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                   "head_dim": head_dim, "rms_norm_eps": eps, "rope_theta": theta,
                   "max_position_embeddings": ctx, "tie_word_embeddings": tied,
                   "bos_token_id": tokens.index("<|im_start|>"), "eos_token_id": tokens.index("<|im_end|>")},
        "tokens": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "chat_template": CHAT_TEMPLATE,
        "encodings": [{"text": s, "ids": tok.encode(s, add_special_tokens=False).ids} for s in PROBES],
        "source_types": {},
    }
    counts = {}
    for n in ["embd"] + (["out"] if not tied else []):
        counts[types[n].name] = counts.get(types[n].name, 0) + 1
    for lt in types["layers"]:
        for k in ("q", "k", "v", "o", "gate", "up", "down"):
            counts[lt[k].name] = counts.get(lt[k].name, 0) + 1
    counts["F32"] = counts.get("F32", 0) + 2 * layers + 1 + (3 * layers if bias else 0)
    meta["source_types"] = dict(sorted(counts.items()))
    with open(os.path.join(OUT, f"{name}.expected.json"), "w") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", name, "vocab", vocab, "tensors", len(expected))


def main():
    os.makedirs(OUT, exist_ok=True)
    make("tiny_llama", "llama", "smollm", tied=False, bias=False, types={
        "embd": Q.Q8_0, "out": Q.F16,
        "layers": [
            dict(q=Q.Q8_0, k=Q.Q4_0, v=Q.Q4_1, o=Q.BF16, gate=Q.F16, up=Q.Q4_1, down=Q.Q4_K),
            dict(q=Q.Q4_1, k=Q.Q8_0, v=Q.Q4_0, o=Q.F16, gate=Q.Q8_0, up=Q.BF16, down=Q.Q6_K),
        ]})
    make("tiny_qwen2", "qwen2", "qwen2", tied=True, bias=True, types={
        "embd": Q.F16,
        "layers": [
            dict(q=Q.Q4_0, k=Q.Q4_1, v=Q.Q8_0, o=Q.F32, gate=Q.Q4_1, up=Q.F16, down=Q.Q6_K),
            dict(q=Q.F32, k=Q.F16, v=Q.BF16, o=Q.Q8_0, gate=Q.Q8_0, up=Q.Q4_0, down=Q.Q4_K),
        ]})


if __name__ == "__main__":
    main()
