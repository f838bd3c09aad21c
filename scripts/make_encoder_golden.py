#!/usr/bin/env python3
"""Goldens for flow's encoder runtime (stdlib/model/src/encoder/), made by
Hugging Face transformers from tiny seeded random configurations.

For each of XLM-RoBERTa and BERT it writes, under
stdlib/model/tests/golden/encoder/<name>/:

  model/            an XLMRobertaForSequenceClassification /
                    BertForSequenceClassification directory (save_pretrained:
                    config.json, model.safetensors, tokenizer files). The
                    tokenizer is a small Unigram (XLM-R's kind, sentencepiece
                    style with the metaspace) or WordPiece (BERT's) model
                    trained on the demo corpus, so tokenizer.json has the same
                    shape as the real models'.
  golden.json       input ids with right padding and attention masks, labels,
                    the logits in eval mode, the cross-entropy loss, the
                    state dict's tensor names and shapes, and texts with their
                    token ids (special tokens added, truncated to max_length).
  grads.safetensors the gradient of every parameter after loss.backward(),
                    under the parameter's state-dict name.

Run by hand (torch is not in CI): python3 scripts/make_encoder_golden.py
with torch, transformers and tokenizers installed. Seeded: rerunning gives
the same files up to torch's version.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast,
                          XLMRobertaConfig, XLMRobertaForSequenceClassification)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "stdlib", "model", "tests", "golden", "encoder")


def demo_texts(n=300):
    texts = []
    with open(os.path.join(ROOT, "data", "demo", "fineweb2-demo.jsonl"), encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= n:
                break
    return texts


def xlmr_tokenizer(texts):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=250, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      unk_token="<unk>", shrinking_factor=0.75)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   sep_token="</s>", cls_token="<s>", pad_token="<pad>", mask_token="<mask>")


def bert_tokenizer(texts):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=250, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", sep_token="[SEP]", cls_token="[CLS]",
                                   pad_token="[PAD]", mask_token="[MASK]")


def perturb(model, gen):
    """Default init leaves LayerNorm at (1, 0) and biases at 0, which would hide
    a parameter used in the wrong role; give every tensor random values."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or "LayerNorm" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def make(name, tokenizer, config, cls, pad_id, texts, gen):
    out = os.path.join(OUT, name)
    os.makedirs(os.path.join(out, "model"), exist_ok=True)
    torch.manual_seed(0)
    model = cls(config)
    perturb(model, gen)
    model.eval()  # no dropout: flow's forward is the eval forward
    vocab = config.vocab_size
    bos, eos = tokenizer.cls_token_id, tokenizer.sep_token_id
    lengths = [9, 14, 5, 14]
    width = max(lengths)
    ids, mask = [], []
    for n in lengths:
        body = torch.randint(5, vocab, (n - 2,), generator=gen).tolist()
        row = [bos] + body + [eos]
        ids.append(row + [pad_id] * (width - n))
        mask.append([1] * n + [0] * (width - n))
    input_ids = torch.tensor(ids)
    attention_mask = torch.tensor(mask)
    labels = torch.tensor([1, 0, 1, 0])
    outp = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    outp.loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    model.save_pretrained(os.path.join(out, "model"))
    tokenizer.save_pretrained(os.path.join(out, "model"))
    save_file(grads, os.path.join(out, "grads.safetensors"))
    sample = [t[:400] for t in texts[:6]] + ["Übelkeit, Fieber und  Kopfschmerzen seit 3 Tagen!", ""]
    tok_cases = []
    for t in sample:
        enc = tokenizer(t, truncation=True, max_length=24)
        tok_cases.append({"text": t, "max_length": 24, "ids": enc["input_ids"]})
    golden = {
        "made_by": f"scripts/make_encoder_golden.py, torch {torch.__version__}, "
                   f"transformers {__import__('transformers').__version__}",
        "architecture": cls.__name__,
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels.tolist(),
        "logits": outp.logits.detach().tolist(),
        "loss": outp.loss.item(),
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "parameters": [n for n, _ in model.named_parameters()],
        "config_keys": sorted(json.load(open(os.path.join(out, "model", "config.json"))).keys()),
        "tokenizer_cases": tok_cases,
    }
    with open(os.path.join(out, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)
    print(name, "loss", outp.loss.item(), "params", sum(p.numel() for p in model.parameters()))


def main():
    gen = torch.Generator().manual_seed(1234)
    texts = demo_texts()
    xt = xlmr_tokenizer(texts)
    labels = {"id2label": {0: "allgemein", 1: "medizinisch"}, "label2id": {"allgemein": 0, "medizinisch": 1}}
    xc = XLMRobertaConfig(vocab_size=len(xt), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
                          bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, num_labels=2, **labels)
    make("xlmr", xt, xc, XLMRobertaForSequenceClassification, 1, texts, gen)
    bt = bert_tokenizer(texts)
    bc = BertConfig(vocab_size=len(bt), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0,
                    layer_norm_eps=1e-12, num_labels=2, **labels)
    make("bert", bt, bc, BertForSequenceClassification, 0, texts, gen)


if __name__ == "__main__":
    sys.exit(main())
