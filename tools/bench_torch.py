"""One training step of notebook 1's ViT and MAE in PyTorch eager, to compare with `hw9 bench`.

Same models (tools/gen_fixtures.py's ViT and MAE, parameter for parameter hw9's), same sizes
(hw9's cpu and full profiles), same batch, same optimizer, same thread count. Run in the tool venv:

    ~/.cache/hw9/tool-venv/bin/python tools/bench_torch.py --threads 2
"""

import argparse
import statistics
import time

import torch
from gen_fixtures import MAE, ViT

# hw9::plan::VitMaePlan: (encoder, decoder, patch size) per profile.
SIZES = {
    "cpu": (dict(d=128, heads=4, layers=4, ffn=256), dict(d=64, heads=4, layers=2, ffn=128), 7),
    "full": (dict(d=256, heads=4, layers=4, ffn=1024), dict(d=128, heads=4, layers=2, ffn=512), 4),
}


def timed(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(10, (args.batch,))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"median of {args.steps} steps after {args.warmup}"
    )
    for name, (enc, dec, patch) in SIZES.items():
        vit = ViT(enc=enc, image=28, patch=patch)
        opt = torch.optim.AdamW(vit.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)

        def vit_step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(vit(x), y).backward()
            opt.step()

        mae = MAE(enc=enc, dec=dec, image=28, patch=patch)
        mopt = torch.optim.AdamW(mae.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

        def mae_step():
            mopt.zero_grad()
            ids = torch.argsort(torch.rand(x.shape[0], mae.n), dim=1)
            encoded, mask, ids_restore = mae.forward_encoder(x, ids)
            mae.forward_loss(x, mae.forward_decoder(encoded, ids_restore), mask).backward()
            mopt.step()

        print(
            f"{name:>4} sizes: ViT step {timed(vit_step, args.warmup, args.steps):.3f} s, "
            f"MAE step {timed(mae_step, args.warmup, args.steps):.3f} s"
        )


if __name__ == "__main__":
    main()
