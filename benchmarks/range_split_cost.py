"""What range-splitting a Fire squeeze output costs: conv multiply-accumulates and latency.

    EDGESQUEEZE_SHARED=../shared python benchmarks/range_split_cost.py --markdown
    python benchmarks/range_split_cost.py --quick                  # a smoke run: few images and runs
    python benchmarks/range_split_cost.py --split fire2.squeeze fire3.squeeze --runs 200
    python benchmarks/range_split_cost.py --pieces 2 3 --markdown  # two and three pieces, side by side

Model: the Deep-Compression SqueezeNet v1.0 (`load_pretrained("squeezenet1_0-dc")`), calibrated
as the main job does (edgesqueeze/job.py): 96 calibration-split images spread evenly over the
split, `calibrate_and_quantize` with `QuantizeOptions.make(range_split=())` ("plain") and with
`QuantizeOptions.make(range_split=--split, range_pieces=N)` for each N of --pieces ("splitN",
quant/range_split.py: extra squeeze channels that the two expand convs read too). Each is written
as INT8 ONNX (x86 target) and INT8 TFLite, each file verified against the integer reference on
evaluation-split images before it is kept.

MACs: every conv's multiply-accumulates for one image, dense, from the arch (benchmarks/run.py's
`conv_macs`, a walk of graph.lower), checked against the quantized model's own weight shapes
(`reference.conv_macs`): a mismatch stops the run.

Latency: batch 1, one evaluation image; all (file, threads) runners, threads 1 and 2, in ONE
interleaved loop (edgesqueeze.timing.interleaved_ms: the order rotates each round, so load from
other jobs hits every row alike). The table shows medians; a split file's ratio over plain is the
ratio of medians, with the interquartile range of the per-round ratios (split and plain timed in
the same round) as its noise. p90s are printed below the table. On a shared machine only the ratios count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (_HERE.parent, _HERE):  # the package checkout and the sibling scripts (run.py)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402

import run as bench_run  # noqa: E402  (benchmarks/run.py: conv_macs, file_runner)

from edgesqueeze.timing import DISCARD, SETTLE_S  # noqa: E402

THREADS = (1, 2)
RUNTIMES = ("ONNX", "TFLite")
PLAIN = "plain"
DEFAULT_SPLIT = ("fire2.squeeze",)


@dataclass(frozen=True)
class Settings:
    calib_images: int  # evenly spaced over the calibration split, as the main job picks them
    verify_images: int  # evaluation images each export is verified on
    runs: int  # timed runs per (file, threads), at least
    warmup: int
    per_round: int


FULL = Settings(calib_images=96, verify_images=8, runs=150, warmup=10, per_round=5)
QUICK = Settings(calib_images=16, verify_images=2, runs=10, warmup=2, per_round=2)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def conv_macs(qm) -> dict[str, int]:
    """{conv: multiply-accumulates for one image} of a quantized model: run.py's count from its
    arch, which must equal the count from its integer weights' shapes and the tensor sizes."""
    from edgesqueeze.quant.reference import conv_macs as from_weights

    macs = bench_run.conv_macs(qm.arch)
    s = qm.arch.input_size
    check = from_weights(qm, (1, s, s, 3))
    if macs != check:
        bad = sorted(k for k in set(macs) | set(check) if macs.get(k) != check.get(k))
        raise RuntimeError(f"MAC counts disagree (arch vs weight shapes) on {', '.join(bad)}")
    return macs


def file_name(runtime: str, variant: str) -> str:
    return f"int8_{variant}_x86.onnx" if runtime == "ONNX" else f"int8_{variant}.tflite"


def export_files(qms: dict[str, object], out_dir: Path, verify: np.ndarray) -> dict[tuple[str, str], Path]:
    """{(runtime, variant): path} of the INT8 files, two per variant, each verified as it is written."""
    from edgesqueeze.export.onnx import Target, to_onnx
    from edgesqueeze.export.tflite import to_tflite

    files = {}
    for variant, qm in qms.items():
        for runtime in RUNTIMES:
            p = out_dir / file_name(runtime, variant)
            rep = (to_onnx(qm, p, target=Target.X86, verify_images=verify) if runtime == "ONNX"
                   else to_tflite(qm, p, verify_images=verify))
            log(f"  {p.name}: {rep.max_lsb_diff} LSB max against the reference, top-1 agreement "
                f"{rep.top1_agreement:.3f}, {p.stat().st_size / 1e6:.2f} MB")
            files[(runtime, variant)] = p
    return files


def summarize(times: dict[tuple, list[float]], per_round: int) -> tuple[dict, dict]:
    """(stats, ratios) from interleaved_ms's {(runtime, variant, threads): [ms, ...]}.
    stats[key] = {median_ms, p90_ms, runs}; ratios[(runtime, variant, threads)] for every variant
    but plain = {ratio: its median / plain's median, q25, q75: quartiles of the per-round ratios
    of medians}."""
    stats = {k: {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)), "runs": len(v)}
             for k, v in times.items()}
    ratios = {}
    for (r, v, t), split in times.items():
        plain = times.get((r, PLAIN, t))
        if v == PLAIN or plain is None:
            continue
        n = min(len(plain), len(split)) // per_round
        rounds = [np.median(split[i * per_round:(i + 1) * per_round]) /
                  np.median(plain[i * per_round:(i + 1) * per_round]) for i in range(n)]
        ratios[(r, v, t)] = {"ratio": stats[(r, v, t)]["median_ms"] / stats[(r, PLAIN, t)]["median_ms"],
                             "q25": float(np.percentile(rounds, 25)), "q75": float(np.percentile(rounds, 75))}
    return stats, ratios


def table_rows(macs: dict[str, int], stats: dict, ratios: dict) -> list[list[str]]:
    """One row per file, variants in the order of `macs` (plain first): file | MACs | extra MACs % |
    median ms per thread count | over plain per thread count (split rows only)."""
    rows = []
    for r in RUNTIMES:
        for v in macs:
            row = [f"INT8 {r} {v} ({file_name(r, v)})", f"{macs[v] / 1e6:.1f} M",
                   f"{100.0 * (macs[v] / macs[PLAIN] - 1):+.2f} %"]
            row += [f"{stats[(r, v, t)]['median_ms']:.2f}" for t in THREADS]
            for t in THREADS:
                q = ratios.get((r, v, t))
                row.append("-" if q is None else f"{q['ratio']:.3f} (rounds IQR {q['q25']:.3f}-{q['q75']:.3f})")
            rows.append(row)
    return rows


HEADERS = ["file", "conv MACs", "extra MACs %"] + [f"{t}-thread median ms" for t in THREADS] + \
          [f"over plain {t}-thread" for t in THREADS]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", nargs="+", default=list(DEFAULT_SPLIT), metavar="T",
                    help=f"tensors to range-split (default: {' '.join(DEFAULT_SPLIT)})")
    ap.add_argument("--pieces", type=int, nargs="+", default=None, metavar="N",
                    help="pieces per split tensor, one split variant each, timed side by side (default: "
                    "QuantizeOptions' default)")
    ap.add_argument("--runs", type=int, default=None,
                    help=f"timed runs per file and thread count (default {FULL.runs}; --quick: {QUICK.runs})")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 16 calibration images, few runs")
    ap.add_argument("--markdown", action="store_true", help="print the facts as a markdown list above the table")
    args = ap.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        ap.error(f"--runs must be at least 1, got {args.runs}")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    s = QUICK if args.quick else FULL
    runs = args.runs or s.runs
    t_start, load_start = time.perf_counter(), os.getloadavg()

    from edgesqueeze import paths, sysinfo
    from edgesqueeze.errors import EdgeSqueezeError

    shared = paths.shared_dir()
    csv = shared / "imagenet" / "sample_labels.csv" if shared is not None else None
    if csv is None or not csv.is_file():
        print("range_split_cost.py: no shared data (imagenet/sample_labels.csv): set EDGESQUEEZE_SHARED to "
              "the shared/ folder", file=sys.stderr)
        return 2
    paths.ensure_weights_env()
    log(f"{sysinfo.cpu_model()}; load average {' '.join(f'{x:.2f}' for x in load_start)}")
    try:
        import torch

        from edgesqueeze.data import load_pixels, read_class_names, read_labels_csv, split_calibration
        from edgesqueeze.job import evenly_spaced
        from edgesqueeze.model import load_pretrained
        from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize
        from edgesqueeze.timing import interleaved_ms

        pieces = args.pieces or [QuantizeOptions.make().range_pieces]
        options = {PLAIN: QuantizeOptions.make(range_split=())}
        options.update({f"split{n}": QuantizeOptions.make(range_split=tuple(args.split), range_pieces=n)
                        for n in dict.fromkeys(pieces)})
        torch.set_num_threads(2)
        model = load_pretrained("squeezenet1_0-dc")
        calib, evals = split_calibration(read_labels_csv(csv))
        items = evenly_spaced(calib, s.calib_images)
        pixels = load_pixels(items, model.arch.preprocess)
        evals_px = load_pixels(evals[:max(1, s.verify_images)], model.arch.preprocess)
        words = paths.default_synset_words()
        labels = read_class_names(words) if words else ()
        qms, macs, records = {}, {}, []
        for v, opt in options.items():
            log(f"calibrate_and_quantize ({v}) on {len(items)} calibration images ...")
            qms[v] = calibrate_and_quantize(model, items, opt, labels=labels, pixels=pixels)[0]
            macs[v] = conv_macs(qms[v])
        records = {v: qm.calibration.get("range_split", []) for v, qm in qms.items() if v != PLAIN}
        with tempfile.TemporaryDirectory(prefix="edgesqueeze-range-split-") as tmp:
            log(f"writing the {2 * len(qms)} INT8 files (each verified against the integer reference) ...")
            files = export_files(qms, Path(tmp), evals_px[:s.verify_images])
            log(f"latency: {runs}+ runs x {len(files)} files x threads {THREADS}, one interleaved loop ...")
            runners = {(r, v, t): bench_run.file_runner(p, t, evals_px[0]) for t in THREADS
                       for (r, v), p in files.items()}
            times = interleaved_ms(runners, warmup=s.warmup, rounds=max(1, -(-runs // s.per_round)),
                                   per_round=s.per_round)
    except EdgeSqueezeError as e:
        print(f"range_split_cost.py: error: {e}", file=sys.stderr)
        return 2
    stats, ratios = summarize(times, s.per_round)
    load_end, seconds = os.getloadavg(), time.perf_counter() - t_start
    extra = {v: {k: n - macs[PLAIN].get(k, 0) for k, n in m.items() if n != macs[PLAIN].get(k)}
             for v, m in macs.items() if v != PLAIN}
    facts = [f"CPU: {sysinfo.cpu_model()}, {sysinfo.usable_cores()} usable cores; load average "
             f"{' '.join(f'{x:.2f}' for x in load_start)} at start, {' '.join(f'{x:.2f}' for x in load_end)} at end",
             f"model: squeezenet1_0-dc; {len(items)} calibration images (evenly spaced over the {len(calib)} of the "
             f"calibration split of {csv.name}); plain: QuantizeOptions.make(range_split=()); splitN: "
             f"range_split={tuple(args.split)}, range_pieces=N",
             *(f"{v}: " + "; ".join(f"{r['tensor']} +{r['extra_channels']} channels (T = {r['threshold']:.4g})"
                                   for r in rec) + "; extra MACs per conv: "
               + ", ".join(f"{k} +{n / 1e6:.2f} M" for k, n in extra[v].items()) for v, rec in records.items()),
             f"latency: batch 1, {stats[next(iter(stats))]['runs']} timed runs per (file, threads) after {s.warmup} "
             f"warm-up, all {len(runners)} runners interleaved in rotating rounds of {s.per_round}, each block after a "
             f"{SETTLE_S} s pause and {DISCARD} untimed run; onnxruntime CPU EP (ORT_ENABLE_ALL), LiteRT (XNNPACK)"
             + ("; --quick: a smoke run, numbers not meaningful" if args.quick else ""),
             "p90 ms (1 / 2 threads): " + "; ".join(f"{r} {v} " + " / ".join(f"{stats[(r, v, t)]['p90_ms']:.2f}"
                                                                          for t in THREADS)
                                                    for r in RUNTIMES for v in macs),
             f"run time: {seconds:.0f} s"]
    from edgesqueeze.metrics import format_table

    print("\n".join(("- " if args.markdown else "") + f for f in facts[:-2]))
    print()
    print(format_table(HEADERS, table_rows({v: sum(m.values()) for v, m in macs.items()}, stats, ratios)))
    print()
    print("\n".join(("- " if args.markdown else "") + f for f in facts[-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
