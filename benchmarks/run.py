"""One command for the benchmark numbers: one markdown table (printed; --out-md) and JSON (--json).

    python benchmarks/run.py                         # the full run: ~3-4 min on 2 cores
    python benchmarks/run.py --quick                 # smoke run: few images and runs (~1 min)
    python benchmarks/run.py --out-md benchmarks/RESULTS.md --json results.json
    python benchmarks/run.py --export-dir export     # the files `edgesqueeze quantize` wrote

Model: the Deep-Compression SqueezeNet v1.0 (real weights, from the shared data). Five files,
all taking uint8 NHWC pixels, side by side in one run:

- FP32 ONNX and FP32 TFLite (`to_onnx_fp32`, `to_tflite_fp32`);
- our INT8 ONNX (x86 target) and our INT8 TFLite (`calibrate_and_quantize` with the default
  options on the calibration split, then `to_onnx` / `to_tflite`, each verified against the
  integer reference on evaluation images before it is written);
- onnxruntime's quantize_static INT8 (QDQ, per-channel, MinMax) of the FP32 ONNX file,
  calibrated on the same images (`onnx_latency.peer_quantize`).
With --export-dir the four edgesqueeze files are taken from that folder instead (what
`edgesqueeze quantize` wrote) and only quantize_static's file is made.

Per file: size; bundle size (`edgesqueeze.formats.bundle.pack_bytes`, "n/a" where that module is
missing); latency median and p90 at 1 and 2 threads, batch 1 — all ten (file, threads)
runners in one timing loop (`timing.interleaved_ms`: the order rotates every round, so load
from other jobs hits every row alike); speed-up against FP32 ONNX; top-1/top-5 on the
evaluation split (disjoint from calibration), top-1 drop and top-1 agreement against FP32 ONNX;
ties per 1000 images (the top two scores exactly equal, or within one output step where the
file's output is quantized).

Then: calibration time for 500 images (`calibration_speed.measure`: collect_stats alone, and
the whole calibrate_and_quantize the main job runs); the camera loop's per-frame time over its
inference time (`camera_overhead.measure_overhead`, INT8 TFLite, no shadow); the arithmetic
limit: the model's conv multiply-accumulates (from `graph.lower`) at an assumed peak int8 rate
of this CPU (stated: ISA, MACs per cycle per core, clock), as a lower bound in ms, and each
INT8 file's measured median as a fraction of it.

Timings depend on what else runs: the ratios within one run are what count. --quick makes
a run that only shows the command works; its numbers are labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # the sibling scripts, when this file is imported by path (tests)
    sys.path.insert(0, str(_HERE))

import numpy as np  # noqa: E402

import calibration_speed  # noqa: E402
import camera_overhead  # noqa: E402
import onnx_latency  # noqa: E402
import tflite_latency  # noqa: E402
from edgesqueeze.sysinfo import cpu_clock_ghz, cpu_count, cpu_flags, cpu_model, usable_cores  # noqa: E402
from edgesqueeze.timing import DISCARD, SETTLE_S, interleaved_ms  # noqa: E402

FP32_ONNX = "FP32 ONNX"
FP32_TFLITE = "FP32 TFLite"
OURS_ONNX = "INT8 ONNX (ours)"
OURS_TFLITE = "INT8 TFLite (ours)"
PEER = "INT8 ONNX quantize_static"
MODELS = (FP32_ONNX, FP32_TFLITE, OURS_ONNX, OURS_TFLITE, PEER)
INT8_MODELS = (OURS_ONNX, OURS_TFLITE, PEER)
BASELINE = FP32_ONNX
FILE_NAMES = {FP32_ONNX: "fp32.onnx", FP32_TFLITE: "fp32.tflite", OURS_ONNX: "int8_ours_x86.onnx",
              OURS_TFLITE: "int8_ours.tflite", PEER: "int8_quantize_static.onnx"}
THREADS = onnx_latency.THREADS  # (1, 2)
CAMERA_SIZE = (640, 480)


@dataclass(frozen=True)
class Settings:
    quick: bool
    calib_images: int | None  # first N of the calibration split; None: all of it
    eval_images: int | None  # first N of the evaluation split; None: all of it
    verify_images: int  # evaluation images each INT8 export is verified on
    runs: int  # timed runs per (file, threads)
    warmup: int  # untimed runs per (file, threads) first
    per_round: int  # timed runs per runner per round of the interleaved loop
    calib_timing_images: int  # images for the calibration-time measurement (the target is for 500)
    camera_frames: int


FULL = Settings(quick=False, calib_images=None, eval_images=None, verify_images=16, runs=100, warmup=10,
                per_round=5, calib_timing_images=calibration_speed.TARGET_IMAGES, camera_frames=100)
QUICK = Settings(quick=True, calib_images=32, eval_images=16, verify_images=4, runs=10, warmup=2, per_round=2,
                 calib_timing_images=16, camera_frames=20)


log = onnx_latency.log  # progress on stderr; the table goes to stdout


# ---------------------------------------------------------------- the files


def build_files(model, calib_items, labels, out_dir: Path, *, verify_pixels: np.ndarray) -> tuple[dict, dict]:
    """({name: path} of the five files written to out_dir, facts about how they were made).
    Our INT8 files are quantized from `model` calibrated on `calib_items` with the default
    options; quantize_static is calibrated on the same images."""
    from edgesqueeze.export.onnx import Target, to_onnx, to_onnx_fp32
    from edgesqueeze.export.tflite import fp32_metadata, to_tflite, to_tflite_fp32
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    arch, params = model.arch, model.numpy_params()
    files = {name: out_dir / FILE_NAMES[name] for name in MODELS}
    options = QuantizeOptions.make()
    log(f"calibrating on {len(calib_items)} images and quantizing (edgesqueeze defaults) ...")
    t0 = time.perf_counter()
    qm = calibrate_and_quantize(model, calib_items, options, labels=labels)[0]
    t_calib = time.perf_counter() - t0
    log("writing the FP32 files and our INT8 files (each INT8 file verified against the integer reference) ...")
    meta = fp32_metadata(arch, labels)
    to_onnx_fp32(arch, params, files[FP32_ONNX], metadata=meta)
    to_tflite_fp32(arch, params, files[FP32_TFLITE], metadata=meta, verify_images=verify_pixels)
    r_onnx = to_onnx(qm, files[OURS_ONNX], target=Target.X86, verify_images=verify_pixels)
    r_tflite = to_tflite(qm, files[OURS_TFLITE], verify_images=verify_pixels)
    t_peer = make_peer(files[FP32_ONNX], files[PEER], calib_items, arch.preprocess)
    made = {"source": f"made in this run; our INT8 files and quantize_static calibrated on the same "
                      f"{len(calib_items)} calibration-split images", "calibration_images": len(calib_items),
            "options": {"scheme": options.scheme.value, "method": options.method.value,
                        "bias_correction": options.bias_correction, "equalize": options.equalize},
            "calibrate_and_quantize_s": round(t_calib, 2), "quantize_static_s": round(t_peer, 2),
            "verified_on": len(verify_pixels),
            "ours_onnx_vs_reference": {"bit_exact": r_onnx.exact_match, "max_lsb": r_onnx.max_lsb_diff,
                                       "top1_agreement": r_onnx.top1_agreement},
            "ours_tflite_vs_reference": {"bit_exact": r_tflite.exact_match, "max_lsb": r_tflite.max_lsb_diff,
                                         "top1_agreement": r_tflite.top1_agreement}}
    return files, made


def make_peer(fp32_onnx: Path, out: Path, calib_items, pre) -> float:
    """onnxruntime quantize_static of `fp32_onnx` calibrated on `calib_items`; seconds taken."""
    log(f"onnxruntime quantize_static on {len(calib_items)} images ...")
    t0 = time.perf_counter()
    onnx_latency.peer_quantize(fp32_onnx, out, onnx_latency.load_pixels(calib_items, pre))
    return time.perf_counter() - t0


def export_files(export_dir: Path, arch_name: str, scheme: str = "affine") -> dict[str, Path]:
    """The four files `edgesqueeze quantize` writes to `export_dir` (its file names)."""
    from edgesqueeze.errors import DataError

    files = {FP32_ONNX: export_dir / f"{arch_name}-fp32.onnx", FP32_TFLITE: export_dir / f"{arch_name}-fp32.tflite",
             OURS_ONNX: export_dir / f"{arch_name}-{scheme}-int8.onnx",
             OURS_TFLITE: export_dir / f"{arch_name}-{scheme}-int8.tflite"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"--export-dir {export_dir}: missing {', '.join(missing)}; run `edgesqueeze quantize "
                        f"--out {export_dir}` first, or leave out --export-dir to make the files in this run")
    return files


def bundle_bytes(path: Path) -> int | None:
    """Size of the file packed by edgesqueeze.formats.bundle.pack_bytes; None (shown "n/a") where that
    module is not there or refuses the file, which is said on stderr."""
    try:
        from edgesqueeze.formats.bundle import pack_bytes
    except ImportError as e:
        log(f"bundle size: n/a ({e})")
        return None
    from edgesqueeze.runtime import ModelFileError

    try:
        return len(pack_bytes(path.read_bytes(), name=path.name))
    except ModelFileError as e:
        log(f"bundle size of {path.name}: n/a ({e})")
        return None


# ---------------------------------------------------------------- running them

_SHAPE_ONLY = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def output_step(path: Path) -> float | None:
    """The spacing of the values the file can output, where they are quantized: 1 for an
    integer output; an ONNX output that comes from a DequantizeLinear (through shape-only ops)
    has that node's scale. None for a float output (ties are then exact equality)."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        out = Interpreter(model_path=str(path)).get_output_details()[0]
        return 1.0 if np.issubdtype(out["dtype"], np.integer) else None
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    if g.output[0].type.tensor_type.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                                                      onnx.TensorProto.DOUBLE):
        return 1.0
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name: i for i in g.initializer}
    name = g.output[0].name
    while name in producer:
        n = producer[name]
        if n.op_type == "DequantizeLinear":
            scale = numpy_helper.to_array(inits[n.input[1]]) if n.input[1] in inits else None
            return float(scale.reshape(())) if scale is not None and scale.size == 1 else None
        if n.op_type not in _SHAPE_ONLY:
            return None
        name = n.input[0]
    return None


def file_logits(path: Path, pixels: np.ndarray, threads: int = 2) -> np.ndarray:
    """Scores of the file for every image (its own runtime)."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        return tflite_latency.run_logits(Interpreter(model_path=str(path), num_threads=threads), pixels)
    import onnxruntime as ort

    return onnx_latency.run_all(onnx_latency.session(ort, path, threads), pixels)


def file_runner(path: Path, threads: int, image: np.ndarray):
    """One single-image inference of the file in its runtime: a callable to time."""
    if path.suffix == ".tflite":
        return tflite_latency.interpreter_runner(path, threads, image)
    import onnxruntime as ort

    return onnx_latency.session_runner(ort, path, threads, image[None])


def evaluate_files(files: dict[str, Path], pixels: np.ndarray, truth: np.ndarray) -> dict[str, dict]:
    """{name: accuracy facts} against the FP32 ONNX file's scores on the same images."""
    from edgesqueeze.evaluate import compare
    from edgesqueeze.metrics import top1_ties

    scores = {name: file_logits(p, pixels) for name, p in files.items()}
    base = scores[BASELINE]
    out = {}
    for name, s in scores.items():
        c = compare(name, s, base, truth)
        step = output_step(files[name])
        # values on a grid of `step` differ by whole steps: "within one step" is <= 1.5 steps, safe
        # against float rounding of the differences
        ties = top1_ties(s, 0.0 if step is None else 1.5 * step)
        out[name] = {"images": c.accuracy.images, "top1": c.accuracy.top1, "top5": c.accuracy.top5,
                     "drop_top1_pp": c.drop_top1, "drop_top5_pp": c.drop_top5, "agreement": c.agreement,
                     "output_step": step, "ties": ties, "ties_per_1000": 1000.0 * ties / len(s)}
    return out


def measure_latency(files: dict[str, Path], image: np.ndarray, *, runs: int, warmup: int,
                    per_round: int) -> dict[str, dict[str, dict]]:
    """{name: {threads (str): {median_ms, p90_ms, min_ms, runs}}}, every (file, threads) runner
    in one interleaved loop; at least `runs` timed runs each."""
    rounds = max(1, -(-runs // per_round))
    runners = {(name, t): file_runner(p, t, image) for t in THREADS for name, p in files.items()}
    times = interleaved_ms(runners, warmup=warmup, rounds=rounds, per_round=per_round)
    out: dict[str, dict[str, dict]] = {name: {} for name in files}
    for (name, t), v in times.items():
        a = np.asarray(v)
        out[name][str(t)] = {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
                             "min_ms": float(a.min()), "runs": len(v)}
    return out


def camera_ratio(model: Path, *, frames: int, items=None) -> dict:
    """The demo loop (headless, no shadow, capture excluded) on a 640x480 MJPG video of the
    shared images: per-frame over inference time."""
    from edgesqueeze.runtime import Classifier

    clf = Classifier.load(model)
    with tempfile.TemporaryDirectory(prefix="edgesqueeze-run-camera-") as tmp:
        video = camera_overhead.make_video(Path(tmp) / "frames.avi", frames, CAMERA_SIZE, items=items)
        o = camera_overhead.measure_overhead(video, clf, [(model.name, None, False)], frames=frames,
                                             warmup_frames=min(20, frames))[0]
    return {"model": model.name, "threads": clf.threads, "frame_size": list(CAMERA_SIZE), **o.to_dict(),
            "target": camera_overhead.RATIO_TARGET}


# ---------------------------------------------------------------- the arithmetic limit


def conv_macs(arch) -> dict[str, int]:
    """Multiply-accumulates of each conv for one image, out_h * out_w * out_c * in_c * k * k,
    walking graph.lower(arch). Dense: the int8 kernels multiply pruned (zero) weights too."""
    from edgesqueeze.arch import pool_output_size
    from edgesqueeze.graph import INPUT, OpKind, lower

    size = {INPUT: arch.input_size}
    macs = {}
    for n in lower(arch):
        s = size[n.inputs[0]]
        if n.kind is OpKind.CONV:
            c = n.conv
            s = (s + 2 * c.pad - c.kernel) // c.stride + 1
            macs[n.name] = s * s * c.out_channels * c.in_channels * c.kernel * c.kernel
        elif n.kind is OpKind.MAXPOOL:
            s = pool_output_size(s, n.kernel, n.stride, n.ceil_mode)
        elif n.kind is OpKind.MEAN:
            s = 1
        size[n.name] = s
    return macs


# (flag, int8 MACs per cycle per core, why): the first flag the CPU has decides
PEAK_RULES = (
    ("amx_int8", 1024, "AMX-INT8: the TMUL unit does 1024 int8 MACs per cycle per core (Intel: 2048 int8 ops/cycle); "
                       "whether a runtime's kernels use AMX is not checked here"),
    ("avx512_vnni", 128, "AVX512-VNNI: VPDPBUSD on 512 bits does 64 u8 x s8 MACs; 2 per cycle per core (two "
                         "512-bit FMA ports, as on Xeon Gold/Platinum; a part with one port has half the rate "
                         "and twice the limit)"),
    ("avx_vnni", 64, "AVX-VNNI: VPDPBUSD on 256 bits does 32 MACs; 2 per cycle per core"),
    ("avx512bw", 64, "AVX-512 without VNNI: VPMADDUBSW + VPMADDWD on 512 bits, 64 MACs per 2 multiply uops; "
                     "2 multiply ports per core"),
    ("avx2", 32, "AVX2: VPMADDUBSW + VPMADDWD on 256 bits, 32 MACs per 2 multiply uops; 2 multiply ports per core"),
    ("i8mm", 64, "Arm I8MM: SMMLA does 32 int8 MACs per 128-bit instruction; 2 per cycle per core"),
    ("asimddp", 32, "Arm dot product: SDOT does 16 int8 MACs per 128-bit instruction; 2 per cycle per core"),
    ("asimd", 16, "Arm NEON without dot product (e.g. Cortex-A72): SMLAL/SMLAL2 do 8 MACs each; 2 per cycle "
                  "per core"),
)


@dataclass(frozen=True)
class PeakInt8:
    """An assumed peak int8 multiply-accumulate rate of one core."""

    macs_per_cycle: int  # per core
    ghz: float
    basis: str  # why that many MACs per cycle
    clock_source: str

    def limit_ms(self, macs: int, threads: int) -> float:
        """The least time `macs` multiply-accumulates can take on `threads` cores at this rate."""
        return 1e3 * macs / (self.macs_per_cycle * self.ghz * 1e9 * threads)

    def to_dict(self) -> dict:
        return asdict(self)


def peak_int8(flags, ghz: float | None, clock_source: str, *, macs_per_cycle: int | None = None) -> PeakInt8 | None:
    """The assumed peak from the CPU's flags (PEAK_RULES) and clock; `macs_per_cycle` overrides
    the rule. None when no rule fits or the clock is unknown."""
    if ghz is None:
        return None
    if macs_per_cycle is not None:
        return PeakInt8(macs_per_cycle, ghz, f"given: {macs_per_cycle} int8 MACs per cycle per core", clock_source)
    for flag, n, why in PEAK_RULES:
        if flag in flags:
            return PeakInt8(n, ghz, why, clock_source)
    return None


def arithmetic_limit(arch, peak: PeakInt8 | None, latency: dict[str, dict[str, dict]]) -> dict:
    macs = conv_macs(arch)
    total = sum(macs.values())
    out = {"conv_macs": total, "per_conv": macs, "peak": peak.to_dict() if peak else None, "limit_ms": {},
           "fraction_of_peak": {}}
    if peak is None:
        return out
    for t in THREADS:
        out["limit_ms"][str(t)] = peak.limit_ms(total, t)
    for name in INT8_MODELS:
        if name in latency:
            out["fraction_of_peak"][name] = {str(t): out["limit_ms"][str(t)] / latency[name][str(t)]["median_ms"]
                                             for t in THREADS}
    return out


# ---------------------------------------------------------------- report


def machine_info() -> dict:
    import cv2
    import onnxruntime
    import torch

    from edgesqueeze.export.tflite import runtime_version

    ghz, source = cpu_clock_ghz()
    return {"cpu": cpu_model(), "machine": platform.machine(), "usable_cores": usable_cores(),
            "logical_cores": cpu_count(), "cpu_flags": tflite_latency.cpu_flags(), "clock_ghz": ghz,
            "clock_source": source, "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "ai_edge_litert": runtime_version(), "torch": torch.__version__,
            "opencv": cv2.__version__}


def _mb(n: int | None, base: int) -> str:
    return "n/a" if n is None else f"{n / 1e6:.2f} MB ({n / base:.2f}x)"


def model_table(results: dict) -> str:
    from edgesqueeze.metrics import format_table

    M = results["models"]
    base = M[BASELINE]["bytes"]
    hdr = ["model", "size (x FP32 ONNX)", "bundle (x FP32 ONNX)"]
    hdr += [f"{t} thr median / p90 ms" for t in THREADS]
    hdr += ["speed-up vs FP32 ONNX (" + " / ".join(f"{t} thr" for t in THREADS) + ")",
            "top-1 %", "top-5 %", "top-1 drop pp", "top-1 agreement %", "ties / 1000"]
    rows = []
    for name in MODELS:
        m = M[name]
        a, lat = m["accuracy"], m["latency"]
        rows.append([name, _mb(m["bytes"], base), _mb(m["bundle_bytes"], base)]
                    + [f"{lat[str(t)]['median_ms']:.2f} / {lat[str(t)]['p90_ms']:.2f}" for t in THREADS]
                    + [" / ".join(f"{m['speedup_vs_fp32_onnx'][str(t)]:.2f}x" for t in THREADS),
                       f"{a['top1']:.2f}", f"{a['top5']:.2f}", f"{a['drop_top1_pp']:.2f}", f"{a['agreement']:.2f}",
                       f"{a['ties_per_1000']:.1f}"])
    return format_table(hdr, rows)


def other_table(results: dict) -> str:
    from edgesqueeze.metrics import format_table

    c, cam, lim = results["calibration"], results["camera"], results["arithmetic"]
    n, target = c["images"], calibration_speed.TARGET_IMAGES
    scaled = "" if n == target else f" (measured on {n} images, scaled to {target})"
    rows = [[f"calibration, {target} images: collect_stats, one pass over the images{scaled}",
             f"{c['collect_s'] * target / n:.1f} s (target < {calibration_speed.TARGET_S:.0f} s)"],
            [f"calibration, {target} images: calibrate_and_quantize, default options ({c['pipeline_passes']} "
             f"passes + quantizing){scaled}", f"{c['pipeline_s'] * target / n:.1f} s"],
            [f"camera loop, per-frame / inference time (median, {cam['model']}, {cam['threads']} threads, "
             f"{cam['frames']} frames {cam['frame_size'][0]}x{cam['frame_size'][1]}, headless, capture excluded)",
             f"{cam['ratio']:.3f} ({cam['median_frame_ms']:.2f} / {cam['median_infer_ms']:.2f} ms; "
             f"target <= {cam['target']})"],
            ["conv multiply-accumulates per image of the FP32 model (dense, from graph.lower; the INT8 files' "
             "range split adds 3.9 %)", f"{lim['conv_macs'] / 1e6:.1f} M"]]
    p = lim["peak"]
    if p is None:
        rows.append(["assumed peak int8 rate", "n/a: no rule for this CPU's flags or no clock; pass "
                     "--peak-macs-per-cycle and --ghz"])
    else:
        rows.append(["assumed peak int8 rate (see the assumption below)",
                     f"{p['macs_per_cycle']} MACs/cycle/core x {p['ghz']:.2f} GHz = "
                     f"{p['macs_per_cycle'] * p['ghz']:.0f} GMAC/s per core"])
        rows.append(["arithmetic limit (lower bound), " + " / ".join(f"{t} thr" for t in THREADS),
                     " / ".join(f"{lim['limit_ms'][str(t)]:.2f} ms" for t in THREADS)])
        for name, f in lim["fraction_of_peak"].items():
            rows.append([f"{name}: limit / measured median (share of peak reached), "
                         + " / ".join(f"{t} thr" for t in THREADS),
                         " / ".join(f"{100 * f[str(t)]:.0f} %" for t in THREADS)])
    notes = [f"- calibration images: {c['description']} (a speed measurement: which images does not matter); "
             f"torch {c['threads']} threads, batch {c['batch_size']}"]
    if p is not None:
        notes.append(f"- assumption for the arithmetic limit: {p['basis']}. Clock: {p['ghz']:.2f} GHz from "
                     f"{p['clock_source']}. The limit counts multiply-accumulates only (dense, pruned zeros "
                     "included; no memory traffic, pooling or requantization): under this assumption no run can be faster")
    return format_table(["measure", "value"], rows) + "\n\n" + "\n".join(notes)


def render_markdown(results: dict) -> str:
    s, mi, made = results["settings"], results["machine"], results["files"]
    lines = ["# Benchmarks: SqueezeNet v1.0 (Deep-Compression weights)", ""]
    if s["quick"]:
        lines += ["**QUICK SMOKE RUN (`--quick`)**: few images, few timed runs, short calibration and camera runs.",
                  "It only shows that the command works; do not quote these numbers.", ""]
    lines += [
        f"- command: `{results['command']}` ({results['date']}, {results['seconds']:.0f} s)",
        f"- machine: {mi['cpu']} ({mi['machine']}), {mi['usable_cores']} usable of {mi['logical_cores']} logical "
        f"cores; flags: {mi['cpu_flags'] or '-'}; load average {results['load_before'][0]:.2f} before, "
        f"{results['load_after'][0]:.2f} after",
        f"- software: Python {mi['python']}, numpy {mi['numpy']}, onnxruntime {mi['onnxruntime']} (CPU EP, "
        f"ORT_ENABLE_ALL), ai-edge-litert {mi['ai_edge_litert']} (XNNPACK), torch {mi['torch']}, OpenCV {mi['opencv']}",
        f"- files: {made['source']}",
        f"- accuracy: {results['evaluation_images']} images of the evaluation split (disjoint from calibration; "
        f"{results['split']}); drop and agreement against FP32 ONNX; a tie: the top two scores equal (within one "
        "output step where the output is quantized)",
        f"- latency: batch 1, one image; {s['runs']}+ timed runs per row and thread count after {s['warmup']} "
        f"warm-up, all {len(MODELS) * len(THREADS)} (file, threads) runners interleaved in rotating rounds of "
        f"{s['per_round']}, each block after a {SETTLE_S} s pause and {DISCARD} untimed run; speed-up = FP32 ONNX "
        "median / this median at the same thread count",
        "",
        model_table(results),
        "",
        other_table(results),
        "",
    ]
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    from edgesqueeze.export.files import atomic_output

    with atomic_output(path) as tmp:
        tmp.write_text(text)


def assemble(*, settings: Settings, machine: dict, made: dict, files: dict[str, Path], accuracy: dict,
             latency: dict, calibration: dict, camera: dict, arithmetic: dict, evaluation_images: int, split: str,
             command: str, seconds: float, load_before, load_after) -> dict:
    """The results document (JSON-ready; render_markdown reads it)."""
    base_bytes = files[BASELINE].stat().st_size
    models = {}
    for name in MODELS:
        size = files[name].stat().st_size
        lat = latency[name]
        models[name] = {"file": str(files[name]), "bytes": size, "size_vs_fp32_onnx": size / base_bytes,
                        "bundle_bytes": bundle_bytes(files[name]), "latency": lat,
                        "speedup_vs_fp32_onnx": {k: latency[BASELINE][k]["median_ms"] / v["median_ms"]
                                                 for k, v in lat.items()},
                        "accuracy": accuracy[name]}
    return {"command": command, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "seconds": seconds,
            "settings": asdict(settings), "machine": machine, "load_before": list(load_before),
            "load_after": list(load_after), "files": made, "evaluation_images": evaluation_images, "split": split,
            "models": models, "calibration": calibration, "camera": camera, "arithmetic": arithmetic}


# ---------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="Module doc: what is measured and how.")
    ap.add_argument("--images", type=int, default=None,
                    help="evaluation images for the accuracy columns: the first N of the evaluation split "
                         "(default: all 406; --quick: 16)")
    ap.add_argument("--runs", type=int, default=None,
                    help=f"timed runs per file and thread count (default {FULL.runs}; --quick: {QUICK.runs})")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few images and runs, labelled as such")
    ap.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--out-md", type=Path, default=None, help="write the markdown (e.g. benchmarks/RESULTS.md)")
    ap.add_argument("--out-dir", type=Path, default=None, help="keep the five model files here (default: a temp dir)")
    ap.add_argument("--export-dir", type=Path, default=None,
                    help="take the FP32 and INT8 files from this `edgesqueeze quantize --out` folder")
    ap.add_argument("--peak-macs-per-cycle", type=int, default=None,
                    help="int8 MACs per cycle per core for the arithmetic limit (default: from the CPU flags)")
    ap.add_argument("--ghz", type=float, default=None, help="clock for the arithmetic limit (default: from the OS)")
    ap.add_argument("--calib-timing-images", type=int, default=None,
                    help="images for the calibration-time row (default 500, its target's count; fewer are "
                    "timed and scaled to 500, and the row says so)")
    args = ap.parse_args(argv)
    for opt in ("images", "runs", "peak_macs_per_cycle", "calib_timing_images"):
        v = getattr(args, opt)
        if v is not None and v < 1:
            ap.error(f"--{opt.replace('_', '-')} must be at least 1, got {v}")
    if args.ghz is not None and not args.ghz > 0:
        ap.error(f"--ghz must be positive, got {args.ghz}")
    if args.export_dir is not None and not args.export_dir.is_dir():
        ap.error(f"--export-dir {args.export_dir} is not a folder; run `edgesqueeze quantize` first or leave it out")
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    settings = replace(settings, eval_images=args.images or settings.eval_images, runs=args.runs or settings.runs,
                       calib_timing_images=args.calib_timing_images or settings.calib_timing_images)

    from edgesqueeze.errors import EdgeSqueezeError
    from edgesqueeze.export.files import check_output_path

    t_start = time.perf_counter()
    load_before = os.getloadavg()
    try:
        for p in (args.json, args.out_md):  # fail before the slow work
            if p is not None:
                check_output_path(p)
        arch, model, calib, evals, labels, csv = onnx_latency.load_real_setup(settings.calib_images,
                                                                              settings.eval_images)
        machine = machine_info()
        log(f"{machine['cpu']}; {len(calib)} calibration and {len(evals)} evaluation images from {csv}")
        pre = arch.preprocess
        if args.export_dir is not None:
            # the job's files preprocess as their metadata says (RGB by default for the Caffe weights)
            from edgesqueeze.formats.tflite import read_tflite_metadata

            pre = read_tflite_metadata(export_files(args.export_dir, arch.name)[OURS_TFLITE]).preprocess
        pixels = onnx_latency.load_pixels(evals, pre)
        truth = np.array([i.label for i in evals])

        out_dir, tmp = onnx_latency.output_dir(args.out_dir, "edgesqueeze-run-")
        try:
            if args.export_dir is not None:
                files = export_files(args.export_dir, arch.name)
                files[PEER] = out_dir / FILE_NAMES[PEER]
                t_peer = make_peer(files[FP32_ONNX], files[PEER], calib, pre)
                made = {"source": f"ours from {args.export_dir} (`edgesqueeze quantize`, calibrated as its "
                                  f"metadata says); quantize_static made in this run, calibrated on {len(calib)} "
                                  "calibration-split images", "calibration_images": len(calib),
                        "quantize_static_s": round(t_peer, 2)}
            else:
                files, made = build_files(model, calib, labels, out_dir,
                                          verify_pixels=pixels[:settings.verify_images])
            log(f"accuracy: {len(files)} files on {len(evals)} evaluation images ...")
            accuracy = evaluate_files(files, pixels, truth)
            log(f"latency: {settings.runs} runs x {len(files)} files x threads {THREADS}, interleaved ...")
            latency = measure_latency(files, pixels[0], runs=settings.runs, warmup=settings.warmup,
                                      per_round=settings.per_round)
            log(f"camera loop: {settings.camera_frames} frames ...")
            camera = camera_ratio(files[OURS_TFLITE], frames=settings.camera_frames)
            log(f"calibration time: {settings.calib_timing_images} images ...")
            items, desc = calibration_speed.pick_images(settings.calib_timing_images)
            timing = calibration_speed.measure(model, items, description=desc, baseline=False, methods=False,
                                               pipeline=True)[0]
            ghz, source = (args.ghz, "given (--ghz)") if args.ghz else (machine["clock_ghz"], machine["clock_source"])
            peak = peak_int8(cpu_flags(), ghz, source, macs_per_cycle=args.peak_macs_per_cycle)
            results = assemble(settings=settings, machine=machine, made=made, files=files, accuracy=accuracy,
                               latency=latency, calibration=timing.to_dict(), camera=camera,
                               arithmetic=arithmetic_limit(arch, peak, latency), evaluation_images=len(evals),
                               split=f"edgesqueeze.data.split_calibration of {csv}",
                               command="python benchmarks/run.py " + " ".join(argv),
                               seconds=time.perf_counter() - t_start, load_before=load_before,
                               load_after=os.getloadavg())
        finally:
            if tmp is not None:
                tmp.cleanup()
        md = render_markdown(results)
        print(md)
        if args.out_md is not None:
            write_text(args.out_md, md)
            log(f"wrote {args.out_md}")
        if args.json is not None:
            write_text(args.json, json.dumps(results, indent=1) + "\n")
            log(f"wrote {args.json}")
    except EdgeSqueezeError as e:
        print(f"run.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
