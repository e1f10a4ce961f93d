#!/usr/bin/env python3
"""Regenerate the parity fixture of the two text conditioners.

Writes crates/ldm-models/tests/fixtures/text_encoders_ref.safetensors
(~0.65 MB), read by crates/ldm-models/tests/text_encoders.rs:

MiniLM (the real frozen all-MiniLM-L6-v2 of scripts/setup.sh,
$CACHE/text/minilm/{config.json, model.safetensors, tokenizer.json}):

    minilm.input_ids           I64 [4, 77]   BertTokenizerFast(tokenizer_file=tokenizer.json)
    minilm.attention_mask      I64 [4, 77]     padding="max_length", max_length=77, truncation=True
    minilm.last_hidden_state   F32 [4, 77, 384]  transformers BertModel(input_ids, attention_mask)
                                             .last_hidden_state, every position (padding rows too)
    minilm.sentence_embedding  F32 [4, 384]  the sentence-transformers output of
                                             all-MiniLM-L6-v2: its modules are Transformer ->
                                             Pooling(mean) -> Normalize, i.e.
                                             e = sum_t m_t h_t / sum_t m_t;  e / ||e||_2
    metadata "minilm.sentences"  the four sentences (JSON list)

  The sentences are "A horse." and "An electric kettle." (two Tux Paint stamp
  captions), the empty string ([CLS] [SEP] only) and a longer one with
  punctuation. sentence-transformers itself pads to 256, not 77; with the
  attention mask the real tokens' states do not depend on the padding length,
  so the pooled embedding is the same.

TextTransformer (the LDM BERTEmbedder network, ldm.modules.x_transformer
TransformerWrapper(num_tokens, max_seq_len, attn_layers=Encoder(dim, depth)),
return_embeddings=True), re-implemented below from the layout alone, small:
vocab 100, max_seq_len 77, dim 32, depth 2, heads 2, dim_head 16:

    text_transformer.<key>     F32  its state dict under the reference names
                               (token_emb.weight, pos_emb.emb.weight,
                               attn_layers.layers.{i}.{0,1}.…, norm.*, and
                               to_logits.* which the Rust side must ignore),
                               PyTorch layout (Linear weights [out, in])
    tt.ids                     I64 [2, 12]   token ids (12 < max_seq_len on purpose)
    tt.output                  F32 [2, 12, 32]
    tt.probe                   F32 [2, 12, 32]  fixed random tensor r
    tt.grad.<key>              F32  d(sum(output * r))/d(weight) for token_emb.weight,
                               attn_layers.layers.0.1.to_q.weight,
                               attn_layers.layers.1.1.net.0.0.weight (through the
                               GELU) and norm.weight
    metadata "tt.config"       the config (JSON, TextTransformerConfig's fields)

Every weight is random (seeded), LayerNorm weights and biases included, so a
swapped or ignored parameter shows. All references are computed in float64
from the float32 weights exactly as stored; the script prints how far a
float32 evaluation drifts from them, as a guide for the Rust tolerances.

Versions: torch 2.15.0, transformers 5.25.0 (tokenizers 0.23.3),
safetensors 0.8.0, numpy 2.4.6 — the pins of scripts/ref_venv.sh.

Usage (after scripts/setup.sh and scripts/ref_venv.sh):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_text_fixture.py
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/ldm-models/tests/fixtures/text_encoders_ref.safetensors"
CACHE = Path(os.environ.get("LDM_TRAIN_CACHE", Path.home() / ".cache/ldm-train"))
MINILM = CACHE / "text/minilm"

SENTENCES = [
    "A horse.",
    "An electric kettle.",
    "",
    "Hello, world! It's 3:45 p.m. — time for tea (Earl Grey), isn't it?",
]
MAX_LENGTH = 77
SEED = 20251207
TT_CONFIG = {"vocab_size": 100, "max_seq_len": 77, "dim": 32, "depth": 2, "heads": 2,
             "dim_head": 16}
TT_LEN = 12
GRAD_KEYS = ["token_emb.weight", "attn_layers.layers.0.1.to_q.weight",
             "attn_layers.layers.1.1.net.0.0.weight", "norm.weight"]


# ---------------------------------------------------------------- MiniLM ----

def minilm(out: dict[str, torch.Tensor]) -> None:
    from transformers import BertModel, BertTokenizerFast

    tok = BertTokenizerFast(tokenizer_file=str(MINILM / "tokenizer.json"))
    enc = tok(SENTENCES, padding="max_length", max_length=MAX_LENGTH, truncation=True,
              return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    # Eager attention: the textbook softmax(q k^T / sqrt(d) + mask) v.
    model = BertModel.from_pretrained(str(MINILM), attn_implementation="eager",
                                      add_pooling_layer=False).eval()

    def run(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        m = model.to(dtype)
        with torch.no_grad():
            h = m(input_ids=ids, attention_mask=mask).last_hidden_state
        w = mask.to(dtype).unsqueeze(-1)
        e = (h * w).sum(1) / w.sum(1).clamp(min=1e-9)
        return h, F.normalize(e, p=2, dim=1)

    h32, e32 = run(torch.float32)
    h64, e64 = run(torch.float64)
    print(f"MiniLM: tokens per sentence {mask.sum(1).tolist()}; |h| max {h64.abs().max():.3f}; "
          f"float32 vs float64: hidden max abs {(h32.double() - h64).abs().max():.2e}, "
          f"embedding max abs {(e32.double() - e64).abs().max():.2e}")
    out["minilm.input_ids"] = ids.to(torch.int64)
    out["minilm.attention_mask"] = mask.to(torch.int64)
    out["minilm.last_hidden_state"] = h64.float()
    out["minilm.sentence_embedding"] = e64.float()


# ------------------------------------------------------- TextTransformer ----
# Written from the x_transformer layout: pre-norm residual blocks, each a
# ModuleList [LayerNorm, block, Residual()].

class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, self.heads, -1).transpose(1, 2)

        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        attn = (q @ k.transpose(-1, -2) * self.scale).softmax(-1)
        return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU()),
                                 nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Residual(nn.Module):
    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return x + residual


class Encoder(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, dim_head: int):
        super().__init__()
        self.layers = nn.ModuleList()
        for _ in range(depth):
            for block in (Attention(dim, heads, dim_head), FeedForward(dim)):
                self.layers.append(nn.ModuleList([nn.LayerNorm(dim), block, Residual()]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, block, residual in self.layers:
            x = residual(block(norm(x)), x)
        return x


class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, max_seq_len: int, dim: int, depth: int, heads: int,
                 dim_head: int):
        super().__init__()
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Module()
        self.pos_emb.emb = nn.Embedding(max_seq_len, dim)
        self.attn_layers = Encoder(dim, depth, heads, dim_head)
        self.norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, vocab_size)  # unused for embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.token_emb(ids)
        x = x + self.pos_emb.emb(torch.arange(ids.shape[1]))[None]
        return self.norm(self.attn_layers(x))


def text_transformer(out: dict[str, torch.Tensor], g: torch.Generator) -> None:
    model = TextTransformer(**TT_CONFIG)
    norms = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if id(p) in norms:
                p.copy_(1.0 + 0.2 * noise)
            elif p.dim() == 1:
                p.copy_(0.2 * noise)
            elif "emb" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[1]))
    ids = torch.randint(0, TT_CONFIG["vocab_size"], (2, TT_LEN), generator=g)
    probe = torch.randn(2, TT_LEN, TT_CONFIG["dim"], generator=g)

    y32 = model(ids)
    (y32 * probe).sum().backward()
    g32 = {k: p.grad.clone() for k, p in model.named_parameters() if k in GRAD_KEYS}
    model.zero_grad()
    model = model.double()
    y = model(ids)
    (y * probe.double()).sum().backward()
    params = dict(model.named_parameters())
    print(f"TextTransformer: |y| max {y.abs().max():.3f}; float32 vs float64 max abs "
          f"{(y32.detach().double() - y).abs().max():.2e}")
    for key in GRAD_KEYS:
        g = params[key].grad
        print(f"  grad {key}: |g| max {g.abs().max():.3f}, float32 vs float64 max abs "
              f"{(g32[key].double() - g).abs().max():.2e}")
    for key, p in model.state_dict().items():
        out[f"text_transformer.{key}"] = p.float().contiguous()
    out["tt.ids"] = ids.to(torch.int64)
    out["tt.output"] = y.detach().float()
    out["tt.probe"] = probe
    for key in GRAD_KEYS:
        out[f"tt.grad.{key}"] = params[key].grad.float().contiguous()


def main() -> None:
    import transformers

    g = torch.Generator().manual_seed(SEED)
    out: dict[str, torch.Tensor] = {}
    minilm(out)
    text_transformer(out, g)
    meta = {"minilm.sentences": json.dumps(SENTENCES, ensure_ascii=False),
            "tt.config": json.dumps(TT_CONFIG),
            "versions": f"torch {torch.__version__}, transformers {transformers.__version__}"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(OUT), metadata=meta)
    OUT.chmod(0o644)  # save_file creates it private; it is committed
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
