"""One training step of notebook 2's summarizer in PyTorch eager, to compare with
`hw9 bench-summarizer`.

The same model as hw9::summarizer::Summarizer: tied token embeddings, learned positions shared by
encoder and decoder (fairseq's make_positions), one embedding LayerNorm, PyTorch's own
nn.TransformerEncoderLayer / nn.TransformerDecoderLayer (batch_first, ReLU, post-norm, residual and
feed-forward dropout),
cross-entropy ignoring -100 plus the accuracy's argmax, AdamW and gradient clipping at 1.0; the
same sizes (hw9's cpu and full profiles), batch, lengths and thread count. Run in the tool venv:

    ~/.cache/hw9/tool-venv/bin/python tools/bench_torch_summarizer.py --threads 2
"""

import argparse

import torch
import torch.nn.functional as F
from bench_torch import timed
from hw9_plan import plan

PAD = 0


def sizes() -> dict:
    """hw9::summarizer::SummarizerConfig::{cpu, full} and the lengths hw9 bench-summarizer uses
    (hw9::plan::SUMMARIZER_BENCH_LENGTHS), read from `hw9 plan`: name -> (model, source, summary)."""
    bench = plan("cpu")["bench_summarizer"]
    out = {}
    for row in bench["lengths"]:
        c = bench[row["size"]]
        assert c["encoder_layers"] == c["decoder_layers"], c
        model = dict(d=c["d_model"], heads=c["n_heads"], layers=c["encoder_layers"], ffn=c["d_ffn"])
        out[row["size"]] = (
            model | dict(positions=c["max_positions"], vocab=c["vocab_size"]),
            row["source"],
            row["summary"],
        )
    return out


class Summarizer(torch.nn.Module):
    def __init__(self, d, heads, layers, ffn, positions, vocab, dropout=0.1):
        super().__init__()
        self.embed_tokens = torch.nn.Embedding(vocab, d, padding_idx=PAD)
        self.embed_positions = torch.nn.Embedding(positions + 1, d, padding_idx=PAD)
        self.layernorm_embedding = torch.nn.LayerNorm(d)
        self.dropout = torch.nn.Dropout(dropout)
        self.encoder = torch.nn.ModuleList(
            torch.nn.TransformerEncoderLayer(d, heads, ffn, dropout, batch_first=True) for _ in range(layers)
        )
        self.decoder = torch.nn.ModuleList(
            torch.nn.TransformerDecoderLayer(d, heads, ffn, dropout, batch_first=True) for _ in range(layers)
        )
        # hw9's initialisation: N(0, d^-1/2) embeddings with zero padding rows. (nn.Embedding's
        # default N(0, 1) makes the tied logits so peaked that the softmax's gradient is full of
        # denormal floats, and the output projection's backward matmul runs ~100x slower.)
        # hw9's layers have no dropout on the attention weights (residual and feed-forward only).
        for layer in [*self.encoder, *self.decoder]:
            layer.self_attn.dropout = 0.0
            if hasattr(layer, "multihead_attn"):
                layer.multihead_attn.dropout = 0.0
        with torch.no_grad():
            for e in (self.embed_tokens, self.embed_positions):
                e.weight.normal_(0.0, d**-0.5)
                e.weight[PAD].zero_()

    def embed(self, tokens):
        real = tokens.ne(PAD).long()
        positions = torch.cumsum(real, dim=1) * real + PAD
        return self.dropout(self.layernorm_embedding(self.embed_tokens(tokens) + self.embed_positions(positions)))

    def forward(self, src, dec_in):
        src_pad, dec_pad = src.eq(PAD), dec_in.eq(PAD)
        x = self.embed(src)
        for layer in self.encoder:
            x = layer(x, src_key_padding_mask=src_pad)
        y = self.embed(dec_in)
        t = dec_in.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=dec_in.device).triu(
            1
        )  # True = hidden, like the padding masks
        for layer in self.decoder:
            y = layer(
                y, x, tgt_mask=causal, tgt_key_padding_mask=dec_pad, memory_key_padding_mask=src_pad, tgt_is_causal=True
            )
        return y @ self.embed_tokens.weight.T  # tied output projection


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--size", choices=["cpu", "full", "both"], default="both")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    table = sizes()
    vocab = table["cpu"][0]["vocab"]
    print(
        f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"vocab {vocab}, median of {args.steps} steps after {args.warmup}"
    )
    for name, (size, src_len, tgt_len) in table.items():
        if args.size not in ("both", name):
            continue
        torch.manual_seed(0)
        model = Summarizer(**size).train().to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = lambda n: torch.randint(3, vocab, (args.batch, n), device=dev)
        src, dec_in, labels = ids(src_len), ids(tgt_len), ids(tgt_len)

        def step():
            opt.zero_grad()
            logits = model(src, dec_in)
            loss = F.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
            counted = labels.ne(-100)
            (logits.argmax(-1).eq(labels) & counted).sum().item()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            loss.item()

        print(
            f"{name:>4} size (source {src_len}, summary {tgt_len} tokens): "
            f"step {timed(step, args.warmup, args.steps, dev):.3f} s"
        )


if __name__ == "__main__":
    main()
