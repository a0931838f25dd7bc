"""When do a model's weights stop fitting the caches? A chain of n copies of one convolution.

A model of ``n`` bias-free 3x3 convolutions in a row (``--channels`` channels at ``--size`` x ``--size``,
random weights of unit gain so that values neither vanish nor blow up), converted to MNN and profiled with
its per-op callbacks (the input written before every run). Each conv reads its own weights once per
inference: with few copies they stay in the caches between two inferences, as when an op is timed alone;
past the caches' effective size they come from memory every time. The script prints each conv's median
in-context time against the model's weight bytes, and the cold time of one conv alone
(:func:`mmt_nas.device.profile.cold_core_ms`: copies of it cycled), in rounds alternating the sizes.

The knee it shows is what ``mmt_nas.predict.cache.CACHE_BYTES`` holds for this project's VM.

Run:  python benchmarks/context.py [--channels 256] [--size 7] [--repeats 3]
Prints a table and rewrites the "context" section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import machine_line, update_section  # noqa: E402

from mmt_nas.build.export import export_to_mnn  # noqa: E402
from mmt_nas.device.profile import cold_core_ms, core_ms, profile_model  # noqa: E402
from mmt_nas.predict.cache import CACHE_BYTES  # noqa: E402

COPIES = (1, 2, 4, 6, 8, 12, 16, 24)


def chain(n: int, channels: int) -> torch.nn.Module:
    torch.manual_seed(n)
    convs = []
    for _ in range(n):
        conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        torch.nn.init.normal_(conv.weight, std=(1.0 / (9 * channels)) ** 0.5)  # unit gain
        convs.append(conv)
    return torch.nn.Sequential(*convs).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--size", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--times", type=int, default=30)
    args = ap.parse_args()
    c, s = args.channels, args.size
    weight_bytes = 4 * c * c * 9
    per_conv: dict[int, list[float]] = {n: [] for n in COPIES}
    cold: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mmt_nas_context_") as tmp:
        files = {}
        for n in COPIES:
            files[n] = Path(tmp) / f"chain-{n}.mnn"
            export_to_mnn(chain(n, c), [1, c, s, s], files[n])
        for rep in range(args.repeats):
            order = COPIES if rep % 2 == 0 else COPIES[::-1]
            for n in order:
                prof = profile_model(files[n], args.times)
                per_conv[n].append(statistics.median(p.latency_ms for p in prof if p.type.startswith("Convolution")))
            one_bytes = weight_bytes + 4 * c * s * s
            cold.append(cold_core_ms(files[1], one_bytes, args.times))
            per_conv[1].append(core_ms(profile_model(files[1], args.times)))
    hot = statistics.median(per_conv[1])
    rows = []
    for n in COPIES:
        med = statistics.median(per_conv[n])
        lo, hi = min(per_conv[n]), max(per_conv[n])
        rows.append(f"| {n} | {n * weight_bytes / 2**20:.1f} | {med:.3f} | {lo:.3f}–{hi:.3f} | {med / hot:.2f} |")
    cold_med = statistics.median(cold)
    body = (
        "## When do a model's weights stop fitting the caches? (`benchmarks/context.py`)\n\n"
        f"Machine: {machine_line()}. A chain of n bias-free 3x3 convolutions, {c} channels at {s}x{s} "
        f"({weight_bytes / 2**20:.2f} MB of weights each), MNN per-op profile ({args.times} runs, input written "
        f"before each), {args.repeats} rounds alternating the order of the sizes. Per conv: the median over "
        "the chain's convs of their in-context time; range: over the rounds.\n\n"
        "| n | model weights MB | ms per conv | range | vs n=1 |\n| --- | --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + f"\n\nOne conv alone, cold (`cold_core_ms`: copies cycled past {48} MB): {cold_med:.3f} ms "
        f"({cold_med / hot:.2f}x its hot {hot:.3f} ms; range {min(cold):.3f}–{max(cold):.3f}). "
        f"The predictor's `CACHE_BYTES` on this machine: {CACHE_BYTES[0] >> 20}–{CACHE_BYTES[1] >> 20} MB.\n"
    )
    print(body)
    update_section("context", body)


if __name__ == "__main__":
    main()
