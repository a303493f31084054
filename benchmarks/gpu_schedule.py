#!/usr/bin/env python
"""How many training iterations of the GPU neck comparison fit in a time budget.

    python benchmarks/gpu_schedule.py --bench gpu_bench.json --seconds 190 --config mask_rcnn_sharp_R101.yaml \
        --necks plain nested full_scale sharp sharp:CONV=3x3 --opts SOLVER.IMS_PER_BATCH 8

prints one number, the iterations per neck, and how it got there on stderr. The necks train as
concurrent processes on one GPU, so the GPU must do all their work in the budget: with t the
seconds per image of a neck's AMP training step measured by gpu_bench.py (same backbone, 512
px), iterations = safety * seconds / (images per step * sum of t over necks and configs). The
sum is an upper bound on shared-GPU time (concurrent processes fill each other's idle gaps);
--safety (default 0.5) covers what the benchmark leaves out: larger training inputs
(INPUT.MIN_SIZE_TRAIN), real images with more nuclei, data loading. A neck missing from the
benchmark counts as its slowest neck; without a benchmark the --fallback count is printed
(clamped like the estimate).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (also puts the repository on the path)
from sharp_fpn import get_sharp_cfg  # noqa: E402

# compare_necks.py's scheme names (and symbols) -> gpu_bench.py's variant of the same neck.
# A nested or full_scale neck counts as its literal 3x3 form, the slower one (an upper bound).
BENCH_VARIANT = {"plain": "plain", "nested": "nested", "++": "nested", "full_scale": "full_scale",
                 "+++": "full_scale", "sharp": "sharp_pwdw", "#": "sharp_pwdw"}


def bench_variant(neck: str) -> str:
    """``"sharp:CONV=3x3"`` -> ``"sharp"``: gpu_bench's name for the neck's form."""
    scheme, _, extra = neck.partition(":")
    keys = dict(item.split("=", 1) for item in filter(None, extra.split(",")))
    if scheme in ("sharp", "#") and keys.get("CONV", "pw_dw") != "pw_dw":
        return "sharp"
    return BENCH_VARIANT.get(scheme, scheme)


def plan(bench: dict, necks, configs: int, ims_per_batch: int, seconds: float, safety: float,
         low: int = 1, high: int = 100000) -> dict:
    """Iterations per neck from gpu_bench.json's content, clamped to [low, high]."""
    per_image = {r["variant"]: r["train_step_s"] / bench["args"]["batch"] for r in bench["rows"]}
    slowest = max(per_image.values())
    times = {neck: per_image.get(bench_variant(neck), slowest) for neck in necks}
    gpu_s_per_iter = configs * ims_per_batch * sum(times.values())
    iterations = int(safety * seconds / gpu_s_per_iter)
    return {"iterations": max(low, min(high, iterations)), "unclamped": iterations, "seconds_per_image": times,
            "gpu_s_per_iteration": gpu_s_per_iter,
            "device": bench["machine"].get("device_name") or bench["machine"].get("device", "?")}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", required=True, help="gpu_bench.json of this machine (missing: --fallback)")
    p.add_argument("--seconds", type=float, required=True, help="training time available to the necks")
    p.add_argument("--config", required=True, help="the comparison's base config (for SOLVER.IMS_PER_BATCH)")
    p.add_argument("--configs", type=int, default=1, help="configs trained at the same time (default: 1)")
    p.add_argument("--necks", nargs="+", required=True, help="compare_necks.py's neck specs")
    p.add_argument("--safety", type=float, default=0.5, help="(default: %(default)s)")
    p.add_argument("--min", type=int, default=1, help="fewest iterations (default: %(default)s)")
    p.add_argument("--max", type=int, default=100000, help="most iterations (default: %(default)s)")
    p.add_argument("--fallback", type=int, required=True, help="iterations when there is no benchmark")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="the comparison's KEY VALUE overrides")
    args = p.parse_args(argv)
    ims_per_batch = get_sharp_cfg(args.config, list(args.opts)).SOLVER.IMS_PER_BATCH
    try:
        bench = json.loads(Path(args.bench).read_text())
        result = plan(bench, args.necks, args.configs, ims_per_batch, args.seconds, args.safety, args.min, args.max)
    except (OSError, ValueError, KeyError, ZeroDivisionError) as error:
        fallback = max(args.min, min(args.max, args.fallback))
        common.log(f"gpu_schedule: no usable benchmark ({args.bench}: {error}); {fallback} iterations")
        print(fallback)
        return
    common.log(f"gpu_schedule: {result['device']}: {result['gpu_s_per_iteration']:.3f} GPU s per iteration of all "
               f"{len(args.necks) * args.configs} runs (batch {ims_per_batch}); {args.safety} x {args.seconds:.0f} s "
               f"-> {result['unclamped']} iterations, clamped to [{args.min}, {args.max}]: {result['iterations']}")
    print(result["iterations"])


if __name__ == "__main__":
    main()
