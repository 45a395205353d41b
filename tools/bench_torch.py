"""One training step of notebook 1's ViT and MAE in PyTorch eager, to compare with `hw9 bench`.

Same models (tools/fixtures/vit_mae.py's ViT and MAE, parameter for parameter hw9's), same sizes
and optimizer settings (read from `hw9 plan`, tools/hw9_plan.py), same batch, same thread count.
Run in the tool venv:

    ~/.cache/hw9/tool-venv/bin/python tools/bench_torch.py --threads 2
"""

import argparse
import statistics
import time

import torch
from fixtures.vit_mae import MAE, ViT
from hw9_plan import encoder, plan


def adamw(params, optim: dict):
    """torch's AdamW with an hw9 OptimConfig's settings (its peak rate)."""
    return torch.optim.AdamW(
        params, lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"], eps=optim["eps"]
    )


def timed(step, warmup, steps, device="cpu"):
    """The median of `steps` timed steps after `warmup`; on CUDA each step ends with a synchronize
    (kernels are launched asynchronously), as hw9's bench does."""
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, 28, 28, device=dev)
    y = torch.randint(10, (args.batch,), device=dev)
    print(
        f"torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"median of {args.steps} steps after {args.warmup}"
    )
    for name in ("cpu", "full"):
        p = plan(name)["vit_mae"]
        vit = ViT(enc=encoder(p["vit"]["encoder"]), image=28, patch=p["vit"]["patch_size"]).to(dev)
        opt = adamw(vit.parameters(), p["vit_train"]["optim"])

        def vit_step():
            opt.zero_grad()
            torch.nn.functional.cross_entropy(vit(x), y).backward()
            opt.step()

        m = p["mae"]
        mae = MAE(enc=encoder(m["encoder"]), dec=encoder(m["decoder"]), image=28, patch=m["patch_size"]).to(dev)
        mopt = adamw(mae.parameters(), p["mae_train"]["optim"])

        def mae_step():
            mopt.zero_grad()
            ids = torch.argsort(torch.rand(x.shape[0], mae.n, device=dev), dim=1)
            encoded, mask, ids_restore = mae.forward_encoder(x, ids)
            mae.forward_loss(x, mae.forward_decoder(encoded, ids_restore), mask).backward()
            mopt.step()

        print(
            f"{name:>4} sizes: ViT step {timed(vit_step, args.warmup, args.steps, dev):.3f} s, "
            f"MAE step {timed(mae_step, args.warmup, args.steps, dev):.3f} s"
        )


if __name__ == "__main__":
    main()
