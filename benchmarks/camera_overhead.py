"""Camera-demo overhead: per-frame time of the demo loop (capture excluded) vs the model's own
inference time, with and without the FP32 shadow, and memory over a long run.

Targets: median per-frame ms <= 1.15 x median inference ms; RSS <= 150 MB and flat (growth
<= 5 % from after warm-up to the end) over the soak run.

The per-frame preprocessing resizes only the window of the frame that the centre crop needs
where that keeps the pixels identical (data.to_uint8_input); the "whole-frame resize" rows run
the same loop with the whole 640x480 frame resized first, interleaved with the windowed runs
(--preprocess-rounds), so the two ratios come from the same minutes of a shared machine.

    # a real INT8 model (and its FP32 reference) first:
    edgesqueeze quantize       # the main job (from the project root): writes export/
    python benchmarks/camera_overhead.py --model export/squeezenet1_0-affine-int8.tflite \\
        --fp32 export/squeezenet1_0-fp32.onnx [--frames 200] [--soak 10000]

The frames are the shared sample images (edgesqueeze.paths.default_labels_csv()) resized to
640x480 and written to a temporary MJPG .avi; the loop runs headless (no window, no overlay),
exactly as `edgesqueeze camera --headless` does, minus the JSON printing. Never imports torch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "edgesqueeze" / "camera" / "__init__.py").is_file():  # this checkout's package, whatever is installed
    sys.path.insert(0, str(_CHECKOUT))

RATIO_TARGET = 1.15
RSS_TARGET_MB = 150.0
GROWTH_TARGET_PCT = 5.0


def rss_mb() -> float:
    """VmRSS of this process from /proc/self/status, MB (nan where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def make_video(path: Path, frames: int, size=(640, 480), items=None) -> Path:
    """An MJPG .avi of `frames` frames: `items` (LabelledImage; default: the shared sample)
    resized to `size`, cycled."""
    import cv2

    from edgesqueeze.data import load_image, read_labels_csv
    from edgesqueeze.paths import default_labels_csv

    if items is None:
        items = read_labels_csv(default_labels_csv())
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    if not w.isOpened():
        sys.exit(f"cannot write {path}")
    for i in range(frames):
        w.write(cv2.resize(load_image(items[i % len(items)].path), size, interpolation=cv2.INTER_AREA))
    w.release()
    return path


def run(video: Path, clf, fp32, *, frames: int, every: int, threaded: bool, loop: bool = False, on_frame=None):
    from edgesqueeze.camera import ShadowTracker, VideoSource, run_loop

    shadow = ShadowTracker(fp32, every=every) if fp32 is not None else None
    with VideoSource(video, loop=loop) as src:
        s = run_loop(src, clf, shadow=shadow, headless=True, max_frames=frames, threaded=threaded, on_frame=on_frame)
    if shadow is not None:
        shadow.close()
    return s


@dataclass(frozen=True)
class Overhead:
    """One timed run of the demo loop (capture excluded)."""

    name: str
    frames: int
    median_infer_ms: float
    median_frame_ms: float  # per-frame work of the loop
    median_extra_ms: float  # median over frames of (per-frame - inference) ms
    fps: float
    dropped: int
    agreement: float | None  # FP32 shadow's top-1 agreement, percent
    comparisons: int
    shadow_median_ms: float | None

    @property
    def ratio(self) -> float:
        """Median per-frame time over median inference time (the target's measure)."""
        return self.median_frame_ms / self.median_infer_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def measure_overhead(video: Path, clf, configs, *, frames: int, every: int = 10, warmup_frames: int = 20,
                     verbose: bool = False) -> list[Overhead]:
    """Time the loop once per config (name, FP32 shadow Classifier or None, capture thread?) on
    `video`, after `warmup_frames` untimed frames."""
    import numpy as np

    from edgesqueeze.camera import format_summary

    run(video, clf, None, frames=warmup_frames, every=every, threaded=False)  # warm-up
    out = []
    for name, shadow_model, threaded in configs:
        extra: list[float] = []
        s = run(video, clf, shadow_model, frames=frames, every=every, threaded=threaded,
                on_frame=lambda r: extra.append(r.total_ms - r.infer_ms))
        out.append(Overhead(name, s.frames, s.median_infer_ms, s.median_frame_ms, float(np.median(extra)), s.fps,
                            s.dropped, s.agreement, s.comparisons, s.shadow_median_ms))
        if verbose:
            print(f"  {name}: {format_summary(s)}", file=sys.stderr)
    return out


def whole_frame_uint8_input(img, pre):
    """The model input from resizing the whole frame, then cropping: the baseline the windowed
    resize of data.to_uint8_input is timed against (the same pixels)."""
    from edgesqueeze.data import to_uint8_input

    return to_uint8_input(img, pre, windowed=False)


def compare_preprocessing(video: Path, clf, *, frames: int, rounds: int) -> dict:
    """Per-frame / inference ratio with the whole-frame resize and with the windowed one, in
    alternating runs (the order flips each round); medians over the rounds."""
    import numpy as np

    import edgesqueeze.runtime as runtime

    windowed = runtime.to_uint8_input
    out: dict[str, list] = {"whole": [], "windowed": [], "whole_extra": [], "windowed_extra": []}
    run(video, clf, None, frames=20, every=10, threaded=False)  # warm-up
    for i in range(rounds):
        for name in (("whole", "windowed") if i % 2 == 0 else ("windowed", "whole")):
            runtime.to_uint8_input = whole_frame_uint8_input if name == "whole" else windowed
            try:
                extra: list[float] = []
                s = run(video, clf, None, frames=frames, every=10, threaded=False,
                        on_frame=lambda r: extra.append(r.total_ms - r.infer_ms))
            finally:
                runtime.to_uint8_input = windowed
            out[name].append(s.median_frame_ms / s.median_infer_ms)
            out[name + "_extra"].append(float(np.median(extra)))
    return {k: float(np.median(v)) for k, v in out.items()} | {"rounds": rounds}


def soak_in_child(args, video: Path, shadow_path: str | None) -> dict:
    cmd = [sys.executable, __file__, "--soak-child", str(video), "--model", args.model, "--soak", str(args.soak),
           "--shadow-every", str(args.shadow_every)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    cmd += ["--fp32", shadow_path] if shadow_path else ["--no-fp32"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"soak run failed:\n{r.stderr}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["name"] = "INT8 only" if not shadow_path else f"INT8 + FP32 shadow ({Path(shadow_path).suffix[1:]})"
    return d


def soak_child(args) -> int:
    """One soak run in this (fresh) process; prints one JSON line."""
    from edgesqueeze.runtime import Classifier

    clf = Classifier.load(args.model, threads=args.threads)
    fp32 = Classifier.load(args.fp32, threads=1) if args.fp32 and not args.no_fp32 else None
    loaded = rss_mb()
    samples = []
    warm = min(200, max(1, args.soak // 10))
    step = max(1, args.soak // 10)

    def sample(r):
        if r.frame + 1 == warm or (r.frame + 1) % step == 0:
            samples.append((r.frame + 1, rss_mb()))

    s = run(Path(args.soak_child), clf, fp32, frames=args.soak, every=args.shadow_every, threaded=False, loop=True,
            on_frame=sample)
    values = [v for _, v in samples]
    print(json.dumps({"frames": s.frames, "fps": s.fps, "loaded": loaded, "warm": warm, "step": step,
                      "base": next(v for n, v in samples if n == warm), "end": values[-1], "peak": max(values),
                      "samples": samples, "torch": any(m.split(".")[0] == "torch" for m in sys.modules)}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="INT8 model (.tflite or .onnx)")
    p.add_argument("--fp32", help="FP32 model for the shadow (.onnx); default: *-fp32.onnx beside --model")
    p.add_argument("--frames", type=int, default=200, help="frames in the video and per timed run (200)")
    p.add_argument("--soak", type=int, default=2000, help="frames of the memory run (2000; 0: skip)")
    p.add_argument("--shadow-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="INT8 threads (default: all cores)")
    p.add_argument("--no-fp32", action="store_true", help="no FP32 shadow (and no auto-detection)")
    p.add_argument("--preprocess-rounds", type=int, default=3,
                   help="alternating runs with the whole-frame and the windowed resize (3; 0: skip)")
    p.add_argument("--soak-child", metavar="VIDEO", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.soak_child:
        return soak_child(args)

    rss_start = rss_mb()
    from edgesqueeze.metrics import format_table
    from edgesqueeze.runtime import Classifier

    fp32_path = None if args.no_fp32 else args.fp32
    if fp32_path is None and not args.no_fp32:
        cands = sorted(Path(args.model).parent.glob("*-fp32.onnx"))
        fp32_path = str(cands[0]) if cands else None
    clf = Classifier.load(args.model, threads=args.threads)
    rss_int8 = rss_mb()
    fp32 = Classifier.load(fp32_path, threads=1) if fp32_path else None
    rss_loaded = rss_mb()
    from edgesqueeze import sysinfo

    print(f"machine: {sysinfo.cpu_model()}, {sysinfo.usable_cores()} usable cores")
    print(f"INT8: {clf!r}")
    if fp32 is not None:
        print(f"FP32 shadow: {fp32!r}, every {args.shadow_every}th frame")

    with tempfile.TemporaryDirectory(prefix="camera_overhead-") as tmp:
        video = make_video(Path(tmp) / "frames.avi", args.frames)
        configs = [("INT8 only", None, False)]
        if fp32 is not None:
            configs += [("INT8 + FP32 shadow", fp32, False),
                        ("INT8 + FP32 shadow, capture thread @30 fps", fp32, True)]
        rows = []
        for o in measure_overhead(video, clf, configs, frames=args.frames, every=args.shadow_every, verbose=True):
            rows.append([o.name, o.frames, o.median_infer_ms, o.median_frame_ms, o.median_extra_ms, f"{o.ratio:.3f}",
                         "PASS" if o.ratio <= RATIO_TARGET else "FAIL", o.fps, o.dropped,
                         "-" if o.agreement is None else f"{o.agreement:.0f} % ({o.comparisons})",
                         "-" if o.shadow_median_ms is None else f"{o.shadow_median_ms:.1f}"])
        rss_after = rss_mb()
        pre = None
        if args.preprocess_rounds:
            pre = compare_preprocessing(video, clf, frames=args.frames, rounds=args.preprocess_rounds)
        print()
        print(format_table(["run", "frames", "infer ms (median)", "per-frame ms (median, no capture)",
                            "per-frame - infer ms (median)",
                            f"ratio (<= {RATIO_TARGET})", "", "FPS", "dropped", "FP32 agreement", "FP32 ms"], rows))

        if pre is not None:
            print(f"\nINT8 only, 640x480, {clf.metadata.preprocess.style} preprocessing; {pre['rounds']} alternating "
                  f"runs of {args.frames} frames each, medians:")
            print(format_table(["resize", "per-frame - infer ms (median)", f"ratio (<= {RATIO_TARGET})", ""],
                               [["whole frame, then crop", pre["whole_extra"], f"{pre['whole']:.3f}",
                                 "PASS" if pre["whole"] <= RATIO_TARGET else "FAIL"],
                                ["window the crop needs (bit-identical)", pre["windowed_extra"], f"{pre['windowed']:.3f}",
                                 "PASS" if pre["windowed"] <= RATIO_TARGET else "FAIL"]], floatfmt=".3f"))

        soaks = []
        if args.soak:
            for shadow_path in [None] + ([fp32_path] if fp32_path else []):
                soaks.append(soak_in_child(args, video, shadow_path))

    print()
    print(format_table(["RSS (VmRSS) of this process", "MB", "target"],
                       [["start (python + numpy)", rss_start, ""], ["INT8 model loaded (+ OpenCV)", rss_int8, ""],
                        ["FP32 shadow loaded" if fp32 else "(no FP32)", rss_loaded, ""],
                        ["after the timed runs", rss_after,
                         f"{'PASS' if rss_after <= RSS_TARGET_MB else 'FAIL'} <= {RSS_TARGET_MB:g} MB"]],
                       floatfmt=".1f"))
    if soaks:
        rows = []
        for d in soaks:
            growth = 100.0 * (d["end"] - d["base"]) / d["base"]
            rows.append([d["name"], d["frames"], d["fps"], d["loaded"], d["base"], d["end"], d["peak"],
                         f"{growth:+.2f} %", "PASS" if growth <= GROWTH_TARGET_PCT else "FAIL",
                         "PASS" if d["peak"] <= RSS_TARGET_MB else "FAIL"])
        print(f"\nsoak: a fresh process per row, the video looped, RSS sampled every {soaks[0]['step']} frames "
              f"(growth from frame {soaks[0]['warm']} to the end; targets: <= {GROWTH_TARGET_PCT:g} %, "
              f"peak <= {RSS_TARGET_MB:g} MB)")
        print(format_table(["soak", "frames", "FPS", "RSS loaded MB", f"RSS @{soaks[0]['warm']} MB", "RSS end MB",
                            "RSS peak MB", "growth", "flat", "<= 150 MB"], rows, floatfmt=".1f"))
        for d in soaks:
            print(f"  {d['name']}: " + ", ".join(f"{n}: {v:.1f}" for n, v in d["samples"]))
    heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
    print(f"\ntorch imported: {'yes: ' + ', '.join(heavy[:3]) if heavy else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
