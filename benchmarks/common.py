"""Shared pieces of the benchmark scripts: neck variants, model building, paired timing, tables.

Every speed is measured against plain FPN in the same run: the variants' calls are interleaved
(one call of each per round, in a shuffled order), and each variant's time is divided by plain's
time from the same round; the tables report the median of those ratios, in wall time and in
the process's CPU time. On a shared machine this cancels most of the drift in load, and the CPU
time leaves out the waits for a core. MACs are counted with fvcore, which counts one
multiply-add as one flop, so its "flops" are MACs (GMAC = 1e9 multiply-adds).
"""
import datetime
import json
import logging
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import sharp_fpn  # noqa: E402  (registers the backbones)
from detectron2.modeling import build_backbone  # noqa: E402
from sharp_fpn import get_sharp_cfg  # noqa: E402

BACKBONES = ("R50", "R101", "VGG16")


@dataclass(frozen=True)
class Variant:
    """A neck to benchmark: a name and the MODEL.SHARP_FPN overrides that build it."""

    name: str
    scheme: str
    opts: Tuple[str, ...] = ()
    note: str = ""

    def overrides(self) -> List[str]:
        return ["MODEL.SHARP_FPN.SCHEME", self.scheme, *self.opts]


def _v(name, scheme, note="", **keys) -> Variant:
    opts = []
    for key, value in keys.items():
        opts += [f"MODEL.SHARP_FPN.{key}", str(value)]
    return Variant(name, scheme, tuple(opts), note)


# The literal forms of the design (concat, one 3x3 conv per node, 64-channel branches) and the
# sum forms; "wide_plain" gets its width from wide_plain_channels() at run time.
SCHEME_VARIANTS = {
    v.name: v
    for v in (
        _v("plain", "plain", "Detectron2's FPN"),
        _v("nested", "nested", "concat + 3x3"),
        _v("nested_sum", "nested", "sum + 3x3", FUSION="sum"),
        _v("full_scale", "full_scale", "concat, 64-ch branches, 3x3"),
        _v("full_scale_sum", "full_scale", "sum, 256-ch branches, 3x3", FUSION="sum"),
        _v("sharp", "sharp", "concat, 64-ch branches, 3x3 (Eq. 1 literal)"),
        _v("sharp_sum", "sharp", "sum, 256-ch branches, 3x3", FUSION="sum"),
    )
}
# Cheaper forms of sharp with the same nodes and edges (issue 6).
CHEAP_SHARP_VARIANTS = {
    v.name: v
    for v in (
        _v("sharp_sep", "sharp", "concat, separable convs", CONV="separable"),
        _v("sharp_sep_s4", "sharp", "concat, separable convs on the stride-4 row", CONV="separable",
           CONV_STRIDES="[4]"),
        _v("sharp_1x1", "sharp", "concat, 1x1 convs", CONV="1x1"),
        _v("sharp_n128", "sharp", "concat, 128-ch nodes, 32-ch branches", NODE_CHANNELS=128,
           BRANCH_CHANNELS=32),
        _v("sharp_sep_n128", "sharp", "concat, separable, 128-ch nodes, 32-ch branches", CONV="separable",
           NODE_CHANNELS=128, BRANCH_CHANNELS=32),
        _v("sharp_sum_sep", "sharp", "sum, separable convs", FUSION="sum", CONV="separable"),
        _v("sharp_pwdw", "sharp", "concat, pointwise-then-depthwise convs (the default CONV)", CONV="pw_dw"),
        _v("sharp_pwdw_n128", "sharp", "concat, pointwise-then-depthwise, 128-ch nodes, 32-ch branches",
           CONV="pw_dw", NODE_CHANNELS=128, BRANCH_CHANNELS=32),
    )
}
ALL_VARIANTS = {**SCHEME_VARIANTS, **CHEAP_SHARP_VARIANTS}
DEFAULT_VARIANTS = ("plain", "wide_plain", "nested", "nested_sum", "full_scale", "full_scale_sum",
                    "sharp", "sharp_sum", "sharp_pwdw")


def quiet() -> None:
    """Silence the known warning floods (jit, fvcore's unsupported-op notes) and set threads."""
    warnings.filterwarnings("ignore")
    for name in ("fvcore", "detectron2", "fvcore.nn.jit_analysis"):
        logging.getLogger(name).setLevel(logging.ERROR)


def set_threads(threads: int) -> int:
    torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def machine_info(device: str = "cpu") -> Dict[str, object]:
    """What the numbers were measured on, for the JSON and the markdown header."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        commit = ""
    import detectron2

    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "detectron2": detectron2.__version__,
        "git_commit": commit,
        "device": device,
    }
    if device.startswith("cuda"):
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def wide_plain_channels(match: str = "sharp", backbone: str = "R50") -> int:
    """ROW_CONV_CHANNELS (a multiple of 32, for GroupNorm) that brings the plain neck's parameter
    count closest to ``match``'s. The extra parameters do not depend on the bottom-up network."""
    target = neck_params(build_backbone(build_cfg(backbone, ALL_VARIANTS[match])))

    def extra(width):
        return neck_params(build_backbone(build_cfg(backbone, _v("wide_plain", "plain", ROW_CONV_CHANNELS=width))))

    # The parameter count is affine in the width: two probes give it exactly.
    a, b = extra(32), extra(64)
    width = 32 + (target - a) / ((b - a) / 32)
    return max(32, int(round(width / 32)) * 32)


def variants(names: Sequence[str], wide_match: str = "sharp") -> List[Variant]:
    """Variants by name; "wide_plain" is plain FPN widened to ``wide_match``'s parameter count."""
    out = []
    for name in names:
        if name == "wide_plain":
            width = wide_plain_channels(wide_match)
            out.append(_v("wide_plain", "plain", f"plain + {width}-ch conv per row (params of {wide_match})",
                          ROW_CONV_CHANNELS=width))
        elif name in ALL_VARIANTS:
            out.append(ALL_VARIANTS[name])
        else:
            raise SystemExit(f"error: unknown variant {name!r}; known: wide_plain, {', '.join(ALL_VARIANTS)}")
    return out


def build_cfg(backbone: str, variant: Variant, size: int = 512, detections: int = 100, device: str = "cpu",
              opts: Sequence[str] = ()):
    """The shipped config for ``backbone`` with ``variant``'s neck, set up for timing at ``size``.

    Detection heads do the same work for every neck: no score threshold and no box NMS, so
    every image gets exactly ``detections`` boxes and masks (random weights otherwise give a
    neck-dependent number of detections).
    """
    if backbone not in BACKBONES:
        raise SystemExit(f"error: unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
    return get_sharp_cfg(f"mask_rcnn_plain_{backbone}", [
        "MODEL.SHARP_FPN.CONV", "3x3",  # a variant is the literal form unless it names its CONV
        *variant.overrides(),
        "MODEL.DEVICE", device,
        "INPUT.MIN_SIZE_TEST", str(size), "INPUT.MAX_SIZE_TEST", str(size),
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0",
        "TEST.DETECTIONS_PER_IMAGE", str(detections),
        *opts,
    ])


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def neck_params(backbone: torch.nn.Module) -> int:
    """Parameters of a built backbone's neck alone: laterals, nodes, row convs, output convs."""
    return count_params(backbone) - count_params(backbone.bottom_up)


def backbone_macs(backbone: torch.nn.Module, size: int) -> Dict[str, float]:
    """GMAC of the bottom-up and of the neck on one size x size image (fvcore: 1 flop = 1 MAC)."""
    from fvcore.nn import FlopCountAnalysis

    x = torch.zeros(1, 3, size, size, device=next(backbone.parameters()).device)
    with torch.no_grad():
        analysis = FlopCountAnalysis(backbone.eval(), x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analysis.total()
        bottom_up = analysis.by_module()["bottom_up"]
    return {"bottom_up": bottom_up / 1e9, "neck": (total - bottom_up) / 1e9}


class CachedBottomUp(torch.nn.Module):
    """Stands in for a neck's bottom-up to time the neck alone: returns stored features."""

    def __init__(self, features: Dict[str, torch.Tensor]):
        super().__init__()
        self.features = features

    def forward(self, x):
        return self.features


def neck_only(backbone, features: Dict[str, torch.Tensor]):
    """A callable running only the neck of ``backbone`` on precomputed bottom-up features."""
    cached = CachedBottomUp(features)

    def run():
        real = backbone.bottom_up
        backbone.bottom_up = cached
        try:
            with torch.no_grad():
                return backbone(None)
        finally:
            backbone.bottom_up = real

    return run


def synthetic_image(size: int, seed: int = 0, device: str = "cpu") -> torch.Tensor:
    """A (3, size, size) float image of bright blobs on a dark background (0..255)."""
    g = torch.Generator().manual_seed(seed)
    image = torch.full((3, size, size), 20.0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(max(4, size * size // 4096)):
        cy, cx = torch.randint(0, size, (2,), generator=g).tolist()
        r = int(torch.randint(4, 14, (1,), generator=g))
        image[:, (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 200.0
    return (image + 10 * torch.rand(image.shape, generator=g)).to(device)


def training_batch(n_images: int, size: int, n_objects: int = 30, seed: int = 0, device: str = "cpu"):
    """Detectron2 training inputs: ``n_images`` images of square nuclei with their masks and boxes."""
    from detectron2.structures import BitMasks, Instances

    g = torch.Generator().manual_seed(seed)
    batch = []
    for _ in range(n_images):
        image = torch.full((3, size, size), 20.0)
        masks = torch.zeros(n_objects, size, size, dtype=torch.bool)
        for k in range(n_objects):
            h, w = torch.randint(max(2, size // 64), max(3, size // 16), (2,), generator=g).tolist()
            y = int(torch.randint(0, size - h, (1,), generator=g))
            x = int(torch.randint(0, size - w, (1,), generator=g))
            masks[k, y : y + h, x : x + w] = True
            image[:, masks[k]] = 200.0
        inst = Instances((size, size))
        inst.gt_masks = BitMasks(masks)
        inst.gt_boxes = inst.gt_masks.get_bounding_boxes()
        inst.gt_classes = torch.zeros(n_objects, dtype=torch.int64)
        batch.append({"image": image.to(device), "instances": inst.to(device), "height": size, "width": size})
    return batch


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(calls: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1, seed: int = 0,
                device: str = "cpu", log: Optional[Callable[[str], None]] = None) -> Dict[str, Dict[str, List[float]]]:
    """Wall and CPU seconds per call for each callable: ``warmup`` untimed rounds, then
    ``repeats`` rounds that call each once, in a shuffled order (so no variant always runs after
    another). CPU time is this process's (all threads): on a shared machine it leaves out the
    time spent waiting for a core, which wall time does not."""
    rng = random.Random(seed)
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: Dict[str, Dict[str, List[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(repeats):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            calls[name]()
            sync(device)
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
        if log:
            log(f"  round {r + 1}/{repeats}: " + ", ".join(
                f"{n} {times[n]['wall'][-1]:.2f}s ({times[n]['cpu'][-1]:.2f} cpu)" for n in names))
    return times


def ratio_stats(times: Dict[str, Dict[str, List[float]]], reference: str = "plain") -> Dict[str, Dict[str, float]]:
    """Per name: median wall seconds, and the median, min and max of the per-round ratio to
    ``reference`` in wall time (ratio*) and in CPU time (cpu_ratio*)."""
    out = {}
    for name, ts in times.items():
        row = {"median_s": statistics.median(ts["wall"]), "median_cpu_s": statistics.median(ts["cpu"]),
               "times_s": ts["wall"], "cpu_times_s": ts["cpu"]}
        if reference in times:
            for kind, prefix in (("wall", "ratio"), ("cpu", "cpu_ratio")):
                ratios = [t / r for t, r in zip(ts[kind], times[reference][kind])]
                row.update({prefix: statistics.median(ratios), f"{prefix}_min": min(ratios),
                            f"{prefix}_max": max(ratios)})
        out[name] = row
    return out


def fmt_ratio(row: Dict[str, float], prefix: str = "ratio") -> str:
    if prefix not in row:
        return "-"
    return f"{row[prefix]:.2f} ({row[prefix + '_min']:.2f}-{row[prefix + '_max']:.2f})"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def header(title: str, info: Dict[str, object], argv: Optional[Sequence[str]] = None) -> str:
    """Markdown heading with the command, the machine and the date."""
    command = " ".join(["python", os.path.relpath(sys.argv[0], REPO), *(sys.argv[1:] if argv is None else argv)])
    machine = f"{info['cpu']}, {info['cpu_count']} cores, {info['torch_threads']} torch threads"
    if info.get("device_name"):
        machine = f"{info['device_name']} ({info['device']}); host {machine}"
    return (f"### {title}\n\n`{command}`\n\n{machine}; load average at start {info.get('load_average')}; "
            f"torch {info['torch']}, detectron2 {info['detectron2']}; commit {info['git_commit']}; {info['date']}\n")


def write_outputs(output_dir: str, stem: str, payload: Dict[str, object], markdown: str) -> List[Path]:
    """Write ``stem``.json and ``stem``.md to ``output_dir``; print and return their paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md"]
    paths[0].write_text(json.dumps(payload, indent=1, default=str) + "\n")
    paths[1].write_text(markdown + "\n")
    for p in paths:
        print(f"wrote {p}")
    return paths


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StageTimer:
    """Exclusive wall seconds per named stage of a pipeline, by wrapping callables in place.

    ``wrap(owner, attribute, stage)`` replaces ``owner.attribute`` (a module function, a class
    method or a bound method of one object) with a timed copy; a stage called inside another is
    subtracted from the outer one, so the stages add up to the wall time of the outermost call.
    ``restore()`` puts the originals back. For benchmarks only: it changes what it times."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}
        self.calls: Dict[str, int] = {}
        self._stack: List[List[float]] = []
        self._patched: List[Tuple[object, str, object]] = []

    def wrap(self, owner, attribute: str, stage: str) -> None:
        original = getattr(owner, attribute)
        timer = self

        def timed(*args, **kwargs):
            timer._stack.append([0.0])
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                inner = timer._stack.pop()[0]
                timer.seconds[stage] = timer.seconds.get(stage, 0.0) + elapsed - inner
                timer.calls[stage] = timer.calls.get(stage, 0) + 1
                if timer._stack:
                    timer._stack[-1][0] += elapsed

        had_own = isinstance(owner, type) or attribute in getattr(owner, "__dict__", {})
        self._patched.append((owner, attribute, original if had_own else None))
        setattr(owner, attribute, timed)

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._patched):
            if original is None:
                delattr(owner, attribute)  # an instance's bound method: the class's comes back
            else:
                setattr(owner, attribute, original)
        self._patched.clear()
