#!/usr/bin/env python
"""Throughput of the Dsb2018 -> COCO converter against the time to decode every PNG once.

    python benchmarks/converter_speed.py /work/shared/data/dsb2018/stage1_train --workers 2

The limit is decoding every image and mask PNG once with OpenCV (the converter's decoder), in
--workers processes, with nothing else done. The converter runs as users run it
(datasets/prepare_dsb2018.py in a fresh process, so its start-up counts) into a temporary
folder; its own library time is reported too. Files are read once before timing so that both
start from a warm page cache; the two alternate --repeats times. Writes converter_speed.json/.md.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def _decode_chunk(paths):
    import cv2

    pixels = 0
    for p in paths:
        array = cv2.imread(p, cv2.IMREAD_UNCHANGED)
        if array is None:
            raise OSError(f"{p}: cannot decode")
        pixels += array.size
    return pixels


def decode_all(paths, workers: int) -> float:
    """Seconds to decode every file once in ``workers`` processes (pool start-up included)."""
    chunks = [paths[i : i + 64] for i in range(0, len(paths), 64)]
    start = time.perf_counter()
    if workers <= 1:
        for chunk in chunks:
            _decode_chunk(chunk)
    else:
        with Pool(workers) as pool:
            list(pool.imap_unordered(_decode_chunk, chunks))
    return time.perf_counter() - start


def run_converter(stage_dir: str, workers: int):
    """(wall seconds of the CLI, library seconds, nuclei written) for one conversion."""
    script = common.REPO / "datasets" / "prepare_dsb2018.py"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script), stage_dir, "--output-dir", out, "--workers", str(workers)],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"error: prepare_dsb2018.py failed: {proc.stderr.strip().splitlines()[-1:]}")
        import json

        nuclei = sum(len(json.loads(p.read_text())["annotations"]) for p in Path(out).glob("*.json"))
    found = re.search(r" nuclei in ([0-9.]+) s", proc.stdout)  # the summary states its own time
    return wall, float(found.group(1)) if found else None, nuclei, proc.stdout


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage_dir", help="a Dsb2018 stage folder (<id>/images/<id>.png, <id>/masks/*.png)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for both (default: all cores)")
    p.add_argument("--repeats", type=int, default=1, help="alternating runs of each (default 1)")
    p.add_argument("--output-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="where converter_speed.json and .md go (default benchmarks/results)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    stage = Path(args.stage_dir)
    if not (common.REPO / "datasets" / "prepare_dsb2018.py").is_file():
        print("datasets/prepare_dsb2018.py is not there: skipped", file=sys.stderr)
        return 0
    images = sorted(stage.glob("*/images/*.png"))
    masks = sorted(stage.glob("*/masks/*.png"))
    if not images:
        raise SystemExit(f"error: {stage}: no <id>/images/<id>.png found")
    paths = [str(p) for p in images + masks]
    size_mb = sum(os.path.getsize(p) for p in paths) / 1e6
    for p in paths:  # warm the page cache for both contenders
        Path(p).read_bytes()
    info = common.machine_info()
    limit, wall, library, nuclei, stdout = [], [], [], 0, ""
    for r in range(args.repeats):
        limit.append(decode_all(paths, args.workers))
        w, lib, nuclei, stdout = run_converter(str(stage), args.workers)
        wall.append(w)
        if lib is not None:
            library.append(lib)
        common.log(f"round {r + 1}: decode {limit[-1]:.1f}s, converter {w:.1f}s (library {lib}s)")
    n = len(images)
    base = statistics.median(limit)

    def row(what, seconds):
        if seconds <= 0:  # below the 0.1 s the summary prints
            return [what, "<0.1", "-", "-", "-"]
        return [what, f"{seconds:.1f}", f"{n / seconds:.1f}", f"{nuclei / seconds:.0f}", f"{seconds / base:.2f}"]

    rows = [row("decode every PNG once (limit)", base), row("prepare_dsb2018.py (whole process)", statistics.median(wall))]
    if library:
        rows.append(row("convert_dsb2018 (library time it reports)", statistics.median(library)))
    md = "\n".join([common.header("Converter throughput (Dsb2018 -> COCO RLE)", info),
                    f"{n} images, {len(masks)} mask PNGs ({size_mb:.0f} MB), {nuclei} nuclei written; "
                    f"{args.workers} worker processes for both; warm page cache; median of {args.repeats} run(s).\n",
                    common.markdown_table(["what", "seconds", "images/s", "nuclei/s", "x limit"], rows) + "\n"])
    print(md)
    payload = {"args": vars(args), "machine": info, "images": n, "mask_files": len(masks), "megabytes": size_mb,
               "nuclei": nuclei, "decode_s": limit, "converter_wall_s": wall, "converter_library_s": library,
               "converter_stdout": stdout}
    common.write_outputs(args.output_dir, "converter_speed", payload, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
