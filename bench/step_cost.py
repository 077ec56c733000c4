"""
Benchmark: seconds per training step of one model on this machine, by input size and with the
stem frozen: what progressive resizing (fewer pixels early) and `--freeze-stem-epochs` (no
backward through the layers at 1/2 and 1/4 resolution) can save per step, before any accuracy
is at stake. Also the eval forward pass alone: what a head stage on cached features would cost.

Synthetic inputs (the cost of a step does not depend on the pixels), AdamW, batch 32; each row
is the median of `--steps` steps after 3 warm-up steps, rows interleaved over `--rounds` rounds
so that a busy moment of the machine does not land on one row only.

    .venv/bin/python bench/step_cost.py
    .venv/bin/python bench/step_cost.py --model resnet18 --sizes 64 128 224
"""

from __future__ import annotations

import argparse
import statistics
import time

import timm
import torch
from torch import nn

from medfit.model.policy import stem_parameters


def step_seconds(
    model: nn.Module, size: int, freeze_stem: bool, steps: int, variant: str = ""
) -> float:
    """`variant`: "" (fp32, contiguous), "channels_last", "bf16" (CPU autocast) or both."""
    stem = {id(p) for p in stem_parameters(model)} if freeze_stem else set()
    for p in model.parameters():
        p.requires_grad_(id(p) not in stem)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    model.train()
    memory = torch.channels_last if "channels_last" in variant else torch.contiguous_format
    model.to(memory_format=memory)
    x, y = torch.randn(32, 3, size, size).to(memory_format=memory), torch.randint(0, 4, (32,))
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", torch.bfloat16, enabled="bf16" in variant):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def forward_seconds(model: nn.Module, size: int, steps: int) -> float:
    model.eval()
    x = torch.randn(32, 3, size, size)
    times = []
    for i in range(steps + 3):
        t0 = time.perf_counter()
        model(x)
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--model", default="tf_efficientnet_lite0")
    ap.add_argument("--sizes", nargs="+", type=int, default=[32, 48, 64, 96, 128])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, num_classes=4)
    cases = [(size, False) for size in args.sizes] + [(size, True) for size in args.sizes]
    results: dict[tuple[int, bool], list[float]] = {case: [] for case in cases}
    forward: dict[int, list[float]] = {size: [] for size in args.sizes}
    variants: dict[str, list[float]] = {"channels_last": [], "bf16": [], "channels_last+bf16": []}
    for _ in range(args.rounds):
        for size, frozen in cases:
            results[(size, frozen)].append(step_seconds(model, size, frozen, args.steps))
        for size in args.sizes:
            forward[size].append(forward_seconds(model, size, args.steps))
        for variant, times in variants.items():
            times.append(step_seconds(model, 64, False, args.steps, variant))
        model.to(memory_format=torch.contiguous_format)
    share = sum(p.numel() for p in stem_parameters(model)) / sum(
        p.numel() for p in model.parameters()
    )
    print(f"{args.model}, batch 32, torch {torch.__version__}, {torch.get_num_threads()} threads;")
    print(f"stem = {len(stem_parameters(model))} tensors, {share:.1%} of the weights\n")
    print("| input px | train step ms | vs 64 px | stem frozen ms | frozen / not | eval fwd ms |")
    print("|--:|--:|--:|--:|--:|--:|")
    ref = statistics.median(results[(64, False)]) if (64, False) in results else None
    for size in args.sizes:
        full = statistics.median(results[(size, False)])
        frozen_s = statistics.median(results[(size, True)])
        fwd = statistics.median(forward[size])
        rel = f"{full / ref:.2f}x" if ref else "-"
        print(
            f"| {size} | {full * 1e3:.0f} | {rel} | {frozen_s * 1e3:.0f} | {frozen_s / full:.2f} "
            f"| {fwd * 1e3:.0f} |"
        )
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"\nAt 64 px (oneDNN reports native bf16 support: {native}):")
    for variant, times in variants.items():
        seconds = statistics.median(times)
        rel = f" ({seconds / ref:.2f}x fp32)" if ref else ""
        print(f"- {variant}: {seconds * 1e3:.0f} ms per step{rel}")


if __name__ == "__main__":
    main()
