"""The main job's time and memory, per stage: `edgesqueeze quantize` with its defaults.

    EDGESQUEEZE_SHARED=../shared python benchmarks/main_job.py [--quick] [--compare-with CHECKOUT]

Runs the job in a fresh process (as a user runs it: `python -m edgesqueeze.cli quantize`, into
a temporary folder) and prints a table: each stage's wall time and peak resident memory (the
kernel's high-water mark, reset at the start of each stage: job.py), then the whole run's wall
time and its peak (the largest stage peak). Targets: <= 60 s and <= 1.0 GiB on a 2-core
machine.

`--compare-with CHECKOUT` also runs another checkout of the project (e.g. `git worktree add
/tmp/before <commit>`) the same way, interleaved run by run with this one, and prints its whole
run's wall time and peak RSS (ru_maxrss of the child: that code does not reset the high-water
mark) beside ours: a before/after measured side by side on the same machine. `--runs N`
repeats each (medians). The CPU model heads the output; figures from different machines do not
compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from edgesqueeze.metrics import format_table  # noqa: E402
from edgesqueeze.sysinfo import cpu_model, usable_cores  # noqa: E402

QUICK = ["--calib-limit", "32", "--limit", "48"]


def quick_options(checkout: Path) -> list[str]:
    """QUICK in the options `checkout` knows (an older CLI calls the calibration limit
    --calib-images)."""
    sources = "".join(f.read_text() for f in (checkout / "edgesqueeze").glob("cli*.py")) + "".join(
        f.read_text() for f in (checkout / "edgesqueeze" / "cli").glob("*.py"))
    return QUICK if "--calib-limit" in sources else ["--calib-images", *QUICK[1:]]


def run_job(checkout: Path, extra: list[str]) -> dict:
    """One `edgesqueeze quantize` in a child process of `checkout`: wall seconds, the child's
    ru_maxrss in MiB, and the report it wrote (None when that code writes no stage table)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    with tempfile.TemporaryDirectory(prefix="edgesqueeze-main-job-") as td:
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen([sys.executable, "-m", "edgesqueeze.cli", "quantize", "--quiet", *extra], cwd=td,
                                    env=env, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KiB)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                raise SystemExit(f"{checkout}: edgesqueeze quantize failed ({proc.returncode}):\n{err.read()[-2000:]}")
        reports = sorted(Path(td, "export").glob("*-report.json"))
        report = json.loads(reports[0].read_text()) if reports else None
    return {"wall": wall, "maxrss_mb": usage.ru_maxrss / 1024, "report": report}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 calibration and 48 evaluation images (a smoke run)")
    ap.add_argument("--compare-with", type=Path, metavar="CHECKOUT", help="another checkout to run side by side")
    ap.add_argument("--runs", type=int, default=1, help="runs of each (default 1; medians)")
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores, {usable_cores()} usable); load average "
          f"{os.getloadavg()[0]:.2f}; {'quick: ' + ' '.join(QUICK) if args.quick else 'the defaults'}")
    ours, theirs = [], []
    for _ in range(args.runs):
        if args.compare_with:
            theirs.append(run_job(args.compare_with, quick_options(args.compare_with) if args.quick else []))
        ours.append(run_job(PROJECT, QUICK if args.quick else []))
    stages: dict[str, list[tuple[float, float | None]]] = {}
    for run in ours:
        for s in run["report"]["stages"]:
            stages.setdefault(s["name"], []).append((s["seconds"], s["peak_rss_mb"]))
    rows = [[name, statistics.median(v[0] for v in vals),
             statistics.median(v[1] for v in vals if v[1] is not None) if any(v[1] for v in vals) else "n/a"]
            for name, vals in stages.items()]
    print(format_table(["stage", "seconds", "peak RSS MiB"], rows, floatfmt=".1f"))
    peak = statistics.median(max(s["peak_rss_mb"] or 0 for s in r["report"]["stages"]) for r in ours)
    total = [["this checkout", statistics.median(r["wall"] for r in ours), peak]]
    if theirs:
        total.append([str(args.compare_with), statistics.median(r["wall"] for r in theirs),
                      statistics.median(r["maxrss_mb"] for r in theirs)])
    print(format_table(["whole run", "wall s (median)", "peak RSS MiB"], total, floatfmt=".1f"))
    acc = ours[-1]["report"].get("accuracy")
    if acc:
        print("accuracy (last run): " + "; ".join(f"{a['name']} top-1 {a['top1']:.2f} %" +
                                                 (f", agreement {a['top1_agreement']:.2f} %" if 'top1_agreement' in a else "")
                                                 for a in acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
