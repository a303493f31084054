#!/usr/bin/env python
"""One summary of the prepared GPU window (scripts/gpu_run.sh): summary.md and results.json.

    python benchmarks/gpu_report.py --work /tmp/sharp_fpn_gpu.XXXX --out $OUT

Reads what the parts left in the work folder, whether they finished or were stopped: the status
of each part (parts.tsv); part a's merged neck table (a/compare_necks.md, from compare_necks.py
--collect) and each run's iterations, times and peak memory (a/*/compare_necks.json, written by
benchmarks/gpu_train.py); part b's two runs with their exported weights; every run that left no
row, with the last line of its log; the GPU's memory and load over the window (log/usage.txt).
Under one heading that names the device, so that the file can go into RESULTS.md as it is.
"""
import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path

RUN_COLUMNS = ["run", "iterations (stopped by)", "images", "train (s)", "eval (s)", "it/s at plan",
               "peak GiB train / eval", "DSB", "segm AP", "fg IoU", "F1@0.5"]


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


def runs_of(work: Path, part: str):
    """(rows of the runs that finished, lines naming those that did not) of one part."""
    rows, missing = [], []
    for run_dir in sorted(p for p in (work / part).glob("*") if p.is_dir() and p.name != "plan"):
        result = read_json(run_dir / "compare_necks.json")
        if result and result.get("rows"):
            rows.append({**result["rows"][0], "header": result.get("header", "")})
        else:
            log = read_text(work / "log" / f"{part}_{run_dir.name}.log").splitlines()
            missing.append(f"- {run_dir.name}: no result; log/{part}_{run_dir.name}.log ends: "
                           f"`{log[-1][:200] if log else 'nothing'}`")
    return rows, missing


def run_table(rows) -> str:
    def cells(r):
        peak = f"{r.get('peak_train_gib')} / {r.get('peak_eval_gib')}" if r.get("peak_train_gib") is not None else "-"
        rate = (r.get("plan") or {}).get("iterations_per_s", "-")
        return [r["name"], f"{r['iterations']} ({r['stopped_by']})", r["images"], f"{r['train_seconds']:.0f}",
                f"{r['eval_seconds']:.0f}", rate, peak, f"{r['nuclei/dsb_score']:.4f}", f"{r['segm/AP']:.2f}",
                f"{r['nuclei/fg_iou']:.4f}", f"{r['nuclei/f1@0.5']:.4f}"]

    lines = ["| " + " | ".join(RUN_COLUMNS) + " |", "|" + "---|" * len(RUN_COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(map(str, cells(r))) + " |" for r in rows])


def usage_summary(work: Path) -> dict:
    """Peak GPU memory in use and mean utilisation over the window's 10 s samples."""
    samples = []
    for line in read_text(work / "log" / "usage.txt").splitlines():
        fields = line.replace(",", " ").split()
        if len(fields) >= 6:
            samples.append({"time": int(fields[0]), "load1": float(fields[1]), "gpu_util": float(fields[4]),
                            "gpu_mib": float(fields[5])})
    if not samples:
        return {"samples": []}
    return {"samples": samples, "peak_gpu_gib": round(max(s["gpu_mib"] for s in samples) / 1024, 1),
            "mean_gpu_util": round(sum(s["gpu_util"] for s in samples) / len(samples)),
            "peak_load1": max(s["load1"] for s in samples)}


def this_machine(work: Path) -> dict:
    """The machine as the first finished run recorded it (gpu_train.py); else date and commit."""
    for path in sorted(work.glob("[ab]/*/compare_necks.json")):
        machine = (read_json(path) or {}).get("machine")
        if machine:
            return machine
    commit = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "git_commit": commit or "?"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="gpu_run.sh's work folder")
    p.add_argument("--out", required=True, help="where summary.md and results.json go")
    p.add_argument("--device", default="cuda", help="the run's --device")
    args = p.parse_args(argv)
    work, out = Path(args.work), Path(args.out)
    parts, parts_md = parts_table(work)
    a_rows, a_missing = runs_of(work, "a")
    b_rows, b_missing = runs_of(work, "b")
    info = this_machine(work)
    device = info.get("device_name") or args.device
    usage = usage_summary(work)
    plans = {part: read_json(work / part / "plan" / "plan.json") for part in ("a", "b")}

    def plan_line(part):
        plan = plans[part]
        if not plan:
            return "No agreed length (no run reached the plan)."
        failed = f" Failed before the plan: {', '.join(plan['failed'])}." if plan.get("failed") else ""
        return f"Agreed length: {plan['iterations']} iterations, the smallest of the runs' fits {plan['fits']}.{failed}"

    b_lines = [f"| {r['name']} | {r.get('export', '-')} | {r.get('export_mb', '-')} | `{r.get('export_sha256', '-')}` |"
               for r in b_rows]
    md = "\n".join([
        f"## GPU window on {device}, {info.get('date', '')}", "",
        f"`bash scripts/gpu_run.sh`; commit {info.get('git_commit', '?')}; torch {info.get('torch', '?')}; "
        f"host {info.get('cpu', '?')}, {info.get('cpu_count', '?')} cores.", "",
        parts_md, "",
        f"GPU memory in use at most {usage.get('peak_gpu_gib', '?')} GiB, mean utilisation "
        f"{usage.get('mean_gpu_util', '?')}%, load average up to {usage.get('peak_load1', '?')} (10 s samples).", "",
        "### a. Table 2 on R-101: the recipe's input, AMP, trained on the 480/120 split, scored on the 120", "",
        plan_line("a"), "",
        read_text(work / "a" / "compare_necks.md") or (a_rows[0]["header"] if a_rows else "No run finished."), "",
        run_table(a_rows) if a_rows else "", *a_missing, "",
        "### b. Shipped-model candidate (596 images, scored on the 4 examples) and its twin "
        "(480, scored on the 120)", "",
        plan_line("b"), "", *(r["header"] + "\n" for r in b_rows[:1]),
        run_table(b_rows) if b_rows else "No run finished.", *b_missing, "",
        "| run | exported | MiB | sha256 |", "|---|---|---|---|", *b_lines, "",
        "### Machine", "", "```", read_text(work / "log" / "machine.txt") or "not recorded", "```", "",
    ])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(md)
    payload = {"device": device, "machine": info,
               "parts": [dict(zip(("part", "status", "wall_s", "limit_s"), row)) for row in parts],
               "a": {"rows": a_rows, "missing": a_missing, "plan": plans["a"],
                     "merged": read_json(work / "a" / "compare_necks.json")},
               "b": {"rows": b_rows, "missing": b_missing, "plan": plans["b"]}, "usage": usage}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"wrote {out / 'summary.md'}\nwrote {out / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
