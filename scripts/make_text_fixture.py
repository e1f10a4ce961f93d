#!/usr/bin/env python3
"""Regenerate the parity fixtures of the text conditioners.

Writes, for crates/ldm-models/tests/text_encoders.rs,
crates/ldm-models/tests/fixtures/text_encoders_ref.safetensors (~0.65 MB;
MiniLM and TextTransformer, `--only text`) and the CLIP text encoder's
fixtures/clip_text/ + fixtures/clip_text_ref.safetensors (~0.29 MB in all,
`--only clip`). Each part draws from its own seeded generator and writes
only its own files, so regenerating one leaves the other's untouched.
(Rerunning a part reproduces its tensors bit for bit; the order of the
metadata keys in a safetensors header may change, it comes from a hash map.)

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

CLIPTextModel (transformers' own, random weights; Stable Diffusion 1.x's text
encoder at toy size): CLIP_CONFIG below — vocab 1000, hidden 32, 2 layers,
4 heads, intermediate 37, 77 positions, quick_gelu, bos 998, eos 999:

    fixtures/clip_text/config.json, model.safetensors
                               model.save_pretrained (transformers 5 writes the
                               keys without the `text_model.` prefix that
                               4.x-era files such as SD 1.x's carry)
  and in fixtures/clip_text_ref.safetensors:
    clip.tokenizer_ids         I64 [3, 77]  the real SD 1.x CLIP ids of the prompts:
                                            transformers 5's CLIPTokenizer (tokenizers-
                                            backed) on the vocabulary that
                                            scripts/text_token_ids.py derives from
                                            $CACHE/text/clip/bpe_simple_vocab_16e6.txt.gz,
                                            padding="max_length", max_length=77,
                                            truncation=True (FrozenCLIPEmbedder's call)
    clip.input_ids             I64 [3, 77]  the same ids moved into the toy vocabulary:
                                            <|startoftext|> 49406 -> 998, <|endoftext|>
                                            49407 -> 999 (the config's bos/eos), any other
                                            id -> id % 998
    clip.last_hidden_state     F32 [3, 77, 32]  CLIPTextModel(input_ids).last_hidden_state
    clip.pooler_output         F32 [3, 32]      its pooler_output (first eos 999)
    clip.probe                 F32 [3, 77, 32]  fixed random tensor r
    clip.grad.<key>            F32  d(sum(last_hidden_state * r))/d(weight) for CLIP_GRAD_KEYS
    clip.short_ids             I64 [2, 10]  random ids below 998; row 0 has eos 999 at
                                            position 6, row 1 none
    clip.short_last_hidden_state  F32 [2, 10, 32]
    clip.short_pooler_output      F32 [2, 32]  eos 999: row 0 at 6, row 1 at 0
    clip.short_pooler_output_legacy F32 [2, 32]  eos_token_id 2 (the pre-#24773 rule of
                                            SD 1.x's config): each row's largest id
    metadata "clip.prompts"    the three prompts (JSON list)

Every weight is random (seeded), LayerNorm weights and biases included, so a
swapped or ignored parameter shows. All references are computed in float64
from the float32 weights exactly as stored; the script prints how far a
float32 evaluation drifts from them, as a guide for the Rust tolerances.

Versions: torch 2.15.0, transformers 5.25.0 (tokenizers 0.23.3),
safetensors 0.8.0, numpy 2.4.6 — the pins of scripts/ref_venv.sh.

Usage (after scripts/setup.sh and scripts/ref_venv.sh):
    ~/.cache/ldm-train/ref-venv/bin/python scripts/make_text_fixture.py [--only text|clip]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/ldm-models/tests/fixtures"
OUT = FIXTURES / "text_encoders_ref.safetensors"
CLIP_DIR = FIXTURES / "clip_text"
CLIP_OUT = FIXTURES / "clip_text_ref.safetensors"
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

CLIP_SEED = 20251208
CLIP_CONFIG = {"vocab_size": 1000, "hidden_size": 32, "intermediate_size": 37,
               "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
               "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "bos_token_id": 998,
               "eos_token_id": 999, "pad_token_id": 999}
CLIP_BOS, CLIP_EOS = 49406, 49407
# The canonical SD prompt, the empty prompt (classifier-free guidance's
# unconditional context) and text_token_ids.LONG, which overflows 77 tokens.
CLIP_PROMPTS = ["a photograph of an astronaut riding a horse", ""]
CLIP_GRAD_KEYS = ["embeddings.position_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight",
                  "encoder.layers.1.mlp.fc1.weight", "final_layer_norm.weight"]


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


def randomize(model: nn.Module, g: torch.Generator) -> None:
    """Every parameter away from its default, so a misplaced one shows:
    LayerNorm scales 1 + 0.2 n, other vectors 0.2 n, embeddings 0.5 n,
    matrices n / sqrt(fan_in), n ~ N(0, 1) drawn in named_parameters order."""
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


def text_transformer(out: dict[str, torch.Tensor], g: torch.Generator) -> None:
    model = TextTransformer(**TT_CONFIG)
    randomize(model, g)
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


# ------------------------------------------------------------------ CLIP ----

def token_ids_script():
    """scripts/text_token_ids.py: its CLIP vocabulary builder and LONG prompt."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import text_token_ids

    return text_token_ids


def clip_tokenizer_ids(prompts: list[str]) -> torch.Tensor:
    """The SD 1.x tokenizer call on the real CLIP vocabulary.

    text_token_ids.py is pinned to transformers 4.57, which exported
    bytes_to_unicode from the CLIP tokenizer module and read merges.txt as
    OpenAI's file; 5.x keeps the function in convert_slow_tokenizer and wants
    the merges as pairs, so both are handed over here. The ids for LONG equal
    those crates/ldm-text/tests/known_ids.rs pins."""
    import transformers.models.clip.tokenization_clip as clip_tokenization
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    clip_tokenization.bytes_to_unicode = bytes_to_unicode
    with tempfile.TemporaryDirectory() as tmp:
        vocab_json, merges_txt = token_ids_script().clip_vocab_files(
            CACHE / "text/clip/bpe_simple_vocab_16e6.txt.gz", Path(tmp))
        vocab = json.loads(vocab_json.read_text())
        lines = merges_txt.read_text().split("\n")
    # After the "#version" line, one merge per vocabulary entry past the
    # 2 x 256 byte symbols and the 2 specials.
    merges = [tuple(line.split()) for line in lines[1:1 + len(vocab) - 514]]
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    enc = tok(prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True,
              return_tensors="pt")
    return enc["input_ids"].to(torch.int64)


def to_toy_vocab(ids: torch.Tensor) -> torch.Tensor:
    """Real CLIP ids moved below CLIP_CONFIG's vocab_size, specials onto its bos/eos."""
    bos, eos = CLIP_CONFIG["bos_token_id"], CLIP_CONFIG["eos_token_id"]
    small = ids % bos
    small[ids == CLIP_BOS] = bos
    small[ids == CLIP_EOS] = eos
    return small


def clip_text(out: dict[str, torch.Tensor]) -> list[str]:
    """Fills `out`, writes CLIP_DIR; returns the prompts."""
    from transformers import CLIPTextConfig, CLIPTextModel

    g = torch.Generator().manual_seed(CLIP_SEED)
    model = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG, attn_implementation="eager")).eval()
    randomize(model, g)
    prompts = CLIP_PROMPTS + [token_ids_script().LONG]
    real = clip_tokenizer_ids(prompts)
    ids = to_toy_vocab(real)
    probe = torch.randn(*ids.shape, CLIP_CONFIG["hidden_size"], generator=g)
    short = torch.randint(0, CLIP_CONFIG["bos_token_id"], (2, 10), generator=g)
    short[0, 6] = CLIP_CONFIG["eos_token_id"]

    def grads(m: nn.Module, dtype: torch.dtype) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        m.zero_grad()
        h = m(input_ids=ids).last_hidden_state
        (h * probe.to(dtype)).sum().backward()
        params = dict(m.named_parameters())
        return h.detach(), {k: params[k].grad.clone() for k in CLIP_GRAD_KEYS}

    h32, g32 = grads(model, torch.float32)
    model.save_pretrained(CLIP_DIR)  # float32, as used in Rust
    for f in CLIP_DIR.iterdir():
        f.chmod(0o644)  # committed; safetensors creates the file private
    m64 = model.double()
    h64, g64 = grads(m64, torch.float64)
    with torch.no_grad():
        pooled = m64(input_ids=ids).pooler_output
        s64 = m64(input_ids=short)
        m64.eos_token_id = 2  # the legacy rule: pool at each row's largest id
        legacy = m64(input_ids=short).pooler_output
    print(f"CLIP: tokens per prompt {(real != CLIP_EOS).sum(1).add(1).clamp(max=77).tolist()}; "
          f"|h| max {h64.abs().max():.3f}; float32 vs float64 max abs "
          f"{(h32.double() - h64).abs().max():.2e}")
    for key in CLIP_GRAD_KEYS:
        print(f"  grad {key}: |g| max {g64[key].abs().max():.3f}, float32 vs float64 max abs "
              f"{(g32[key].double() - g64[key]).abs().max():.2e}")
    out["clip.tokenizer_ids"] = real
    out["clip.input_ids"] = ids
    out["clip.last_hidden_state"] = h64.float()
    out["clip.pooler_output"] = pooled.float()
    out["clip.probe"] = probe
    for key in CLIP_GRAD_KEYS:
        out[f"clip.grad.{key}"] = g64[key].float().contiguous()
    out["clip.short_ids"] = short
    out["clip.short_last_hidden_state"] = s64.last_hidden_state.float()
    out["clip.short_pooler_output"] = s64.pooler_output.float()
    out["clip.short_pooler_output_legacy"] = legacy.float()
    return prompts


def save(out: dict[str, torch.Tensor], path: Path, meta: dict[str, str]) -> None:
    import transformers

    meta = {**meta, "versions": f"torch {torch.__version__}, "
                                f"transformers {transformers.__version__}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    path.chmod(0o644)  # save_file creates it private; it is committed
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["text", "clip"],
                        help="regenerate one part: text (MiniLM + TextTransformer, "
                             "text_encoders_ref.safetensors) or clip (clip_text/ + "
                             "clip_text_ref.safetensors)")
    only = parser.parse_args().only
    if only in (None, "text"):
        g = torch.Generator().manual_seed(SEED)
        out: dict[str, torch.Tensor] = {}
        minilm(out)
        text_transformer(out, g)
        save(out, OUT, {"minilm.sentences": json.dumps(SENTENCES, ensure_ascii=False),
                        "tt.config": json.dumps(TT_CONFIG)})
    if only in (None, "clip"):
        out = {}
        prompts = clip_text(out)
        save(out, CLIP_OUT, {"clip.prompts": json.dumps(prompts)})


if __name__ == "__main__":
    main()
