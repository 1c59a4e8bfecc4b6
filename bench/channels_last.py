"""Conv weights in channels-last (NHWC) against PyTorch's default NCHW, on this machine's CPU.

    .venv/bin/python bench/channels_last.py                  # 1 thread, as a Ray worker runs it
    .venv/bin/python bench/channels_last.py --threads 2 --models plain_cnn

``knd.learning.models.build_model`` returns every model with channels-last weights. For each
model this times a training step (forward, loss, backward, SGD step) and an inference forward on
a batch of random 3 s log-mels (64 mels x 301 frames), once with the weights in the default
layout (the baseline) and once in channels-last, alternating ``--repeats`` times (best counts).
It also checks that both layouts give the same logits. Figures are ratios against the default
layout, written to ``bench/results/channels_last.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import Machine, write_results

from knd.learning.models import build_model

RESULTS = Path(__file__).resolve().parent / "results" / "channels_last.json"
FRAMES, MELS, CLASSES = 301, 64, 8
SIDE_GROUPS = {"fused_cnn": {"prosody": (4,), "egemaps": (88,)}, "late_fusion": {"egemaps": (88,)}}


def side_inputs(name: str, batch: int) -> dict[str, torch.Tensor]:
    """The non-log-mel inputs ``name`` reads, random."""
    shapes = {"prosody": (batch, 4, FRAMES), "egemaps": (batch, 88)}
    return {g: torch.randn(shapes[g]) for g in SIDE_GROUPS.get(name, {})}


def ms_per_clip(run, batch: int, seconds: float) -> float:
    """Milliseconds a clip of ``run`` (one call on ``batch`` clips), after one warm-up call."""
    run()
    started, clips = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        run()
        clips += batch
    return 1000.0 * (time.perf_counter() - started) / clips


def timings(model: torch.nn.Module, name: str, batch: int, seconds: float) -> dict[str, float]:
    """Training-step and inference milliseconds per clip of ``model`` in its current layout."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 1, MELS, FRAMES), torch.randint(0, CLASSES, (batch,))
    side = side_inputs(name, batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train_step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x, **side), y).backward()
        optimizer.step()

    def infer() -> None:
        with torch.inference_mode():
            model(x, **side)

    model.train()
    train = ms_per_clip(train_step, batch, seconds)
    model.eval()
    return {"train_ms": train, "infer_ms": ms_per_clip(infer, batch, seconds)}


def max_logit_difference(name: str, batch: int) -> float:
    """Largest |logit| difference between the two layouts of one set of weights (eval mode)."""
    torch.manual_seed(0)
    model = build_model(name, CLASSES, groups=SIDE_GROUPS.get(name)).eval()
    x, side = torch.randn(batch, 1, MELS, FRAMES), side_inputs(name, batch)
    with torch.inference_mode():
        nhwc = model(x, **side)
        nchw = model.to(memory_format=torch.contiguous_format)(x, **side)
    return float((nhwc - nchw).abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="cpu_small,plain_cnn,fused_cnn,resnet18")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: a Ray worker)")
    parser.add_argument("--batch", type=int, default=32, help="clips per call")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per figure")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs; best counts")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = Machine()

    figures = {}
    for name in args.models.split(","):
        model = build_model(name, CLASSES, groups=SIDE_GROUPS.get(name))
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.repeats):
            for layout, fmt in (("nchw", torch.contiguous_format), ("nhwc", torch.channels_last)):
                got = timings(model.to(memory_format=fmt), name, args.batch, args.seconds)
                kept = best.setdefault(layout, got)
                best[layout] = {key: min(value, kept[key]) for key, value in got.items()}
        figures[name] = {
            **best,
            "train_speedup": best["nchw"]["train_ms"] / best["nhwc"]["train_ms"],
            "infer_speedup": best["nchw"]["infer_ms"] / best["nhwc"]["infer_ms"],
            "max_abs_logit_difference": max_logit_difference(name, args.batch),
        }
        f = figures[name]
        print(
            f"  {name:10s} train {best['nchw']['train_ms']:6.2f} -> {best['nhwc']['train_ms']:6.2f}"
            f" ms/clip ({f['train_speedup']:.2f}x)   infer {best['nchw']['infer_ms']:6.2f} ->"
            f" {best['nhwc']['infer_ms']:6.2f} ms/clip ({f['infer_speedup']:.2f}x)"
            f"   max |logit diff| {f['max_abs_logit_difference']:.1e}"
        )
    results = {
        "command": "python bench/channels_last.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "baseline": "the same weights in PyTorch's default (NCHW) layout",
        "machine": machine.record(torch_threads=args.threads, torch=torch.__version__),
        "figures": figures,
    }
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
