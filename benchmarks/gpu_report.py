#!/usr/bin/env python
"""One summary of the prepared GPU run (scripts/gpu_run.sh): summary.md and results.json.

    python benchmarks/gpu_report.py --work /tmp/sharp_fpn_gpu.XXXX --out $OUT

Reads what the parts left in the work folder, whether they finished or were stopped by their
time limit: the status of each part (parts.tsv), the smoke test (a/), the throughput table
(b/), the neck comparison of each config (c/, with the iterations the schedule chose and any
neck that left no result) and the UNet runs (d/), and puts them under one heading that names
the device, so the file can go into RESULTS.md as it is.
"""
import argparse
import json
import sys
from pathlib import Path


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def parts_table(work: Path):
    rows = [line.split("\t") for line in read_text(work / "parts.tsv").splitlines() if line]
    lines = ["| part | status | wall (s) | limit (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {status} | {wall} | {limit} |" for name, status, wall, limit in rows]
    return rows, "\n".join(lines)


def neck_section(work: Path):
    """Per config: the merged table, and the necks whose process left no result."""
    payload, lines = {}, []
    iterations = read_text(work / "c_iterations.txt")
    schedule = read_text(work / "log" / "c_schedule.log").splitlines()
    lines.append(f"Iterations per neck: {iterations or '?'}" + (f" ({schedule[-1]})" if schedule else "") + ".")
    for config_dir in sorted(p for p in (work / "c").glob("*") if p.is_dir()):
        merged = read_json(config_dir / "compare_necks.json")
        payload[config_dir.name] = merged
        lines += ["", f"### {config_dir.name}", "", read_text(config_dir / "compare_necks.md") or "No neck finished."]
        missing = [p.name for p in sorted(config_dir.iterdir()) if p.is_dir() and not (p / "compare_necks.json").is_file()]
        if missing:
            lines += ["", f"No result (stopped or failed; see log/c_{config_dir.name}_*.log): {', '.join(missing)}."]
    return {"iterations": iterations, "schedule": schedule, "configs": payload}, "\n".join(lines)


def unet_section(work: Path):
    """A row per UNet run record (unet_reproduce.py's JSON), then the IoU-definition table."""
    runs = []
    for path in sorted((work / "d").rglob("*.json")):
        record = read_json(path)
        if isinstance(record, dict) and "history" in record and record.get("history"):
            runs.append(record)
    lines = ["| run | params | epochs (done / planned) | final IoU | best IoU (epoch) | final Dice | train wall (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        final, best = r["final"], r["best"]
        lines.append(f"| {r['run']} | {r['params']:,} | {r['epochs_done']} / {r['epochs_planned']} | "
                     f"{100 * final['iou']:.2f} | {100 * best['iou']:.2f} ({best['epoch']}) | "
                     f"{100 * final.get('dice', float('nan')):.2f} | {r['train_wall_s']:.0f} |")
    if not runs:
        lines = ["No UNet run finished."]
    definitions = read_text(work / "d" / "iou_definitions.md")
    if definitions:
        lines += ["", definitions]
    summary = [{k: v for k, v in r.items() if k != "history"} for r in runs]
    return {"runs": summary, "iou_definitions": read_json(work / "d" / "iou_definitions.json")}, "\n".join(lines)


def device_name(*payloads, fallback: str) -> str:
    for payload in payloads:
        name = ((payload or {}).get("machine") or {}).get("device_name")
        if name:
            return name
    return fallback


def this_machine(device: str) -> dict:
    """The machine's description when parts a and b were skipped (PARTS=...): the report runs there too."""
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import common
        return common.machine_info(device)
    except Exception:  # torch or the device missing: the summary still gets written
        return {}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="gpu_run.sh's work folder")
    p.add_argument("--out", required=True, help="where summary.md and results.json go")
    p.add_argument("--device", default="cuda", help="the run's --device, named when no part recorded the device")
    args = p.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    smoke, bench = read_json(work / "a" / "gpu_smoke.json"), read_json(work / "b" / "gpu_bench.json")
    parts, parts_md = parts_table(work)
    necks, necks_md = neck_section(work)
    unets, unets_md = unet_section(work)
    machine = read_text(work / "log" / "machine.txt")
    info = (smoke or bench or {}).get("machine") or this_machine(args.device)
    device = device_name(smoke, bench, {"machine": info}, fallback=args.device)
    md = "\n".join([
        f"## GPU run on {device}, {info.get('date', '')}", "",
        f"`bash scripts/gpu_run.sh`; commit {info.get('git_commit', '?')}; torch {info.get('torch', '?')}; "
        f"host {info.get('cpu', '?')}, {info.get('cpu_count', '?')} cores.", "",
        parts_md, "",
        "### a. Smoke test: every config, one AMP train step and one inference", "",
        read_text(work / "a" / "gpu_smoke.md") or "No result.", "",
        "### b. Throughput and memory per neck", "",
        read_text(work / "b" / "gpu_bench.md") or "No result.", "",
        "### c. Table 2, lower part: necks trained side by side on the 480/120 split", "",
        necks_md, "",
        "### d. Table 2, upper part: UNet and UNet# on VGG16 / ResNet-101 encoders (random init)", "",
        unets_md, "",
        "### Machine", "", "```", machine or "not recorded", "```", "",
    ])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(md)
    payload = {"device": device, "parts": [dict(zip(("part", "status", "wall_s", "limit_s"), row)) for row in parts],
               "smoke": smoke, "bench": bench, "necks": necks, "unet": unets, "machine": machine}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {out / 'summary.md'}\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
