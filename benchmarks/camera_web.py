"""Live page cost: the demo loop's inference FPS with 0 and with 5 stream viewers connected
(adjacent pairs of rounds, the median of the pairs' ratios), and resident memory over a run in
which viewers keep connecting and disconnecting.

Targets: FPS with 5 viewers within 5 % of FPS with none; RSS growth < 5 % from warm-up to the
end of the memory run; no threads left behind.

    python benchmarks/camera_web.py --model export/squeezenet1_0-affine-int8.tflite \\
        [--fp32 export/squeezenet1_0-fp32.onnx] [--rounds 10] [--round-seconds 4] [--minutes 10]

The frames are the shared sample images resized to 640x480 in a temporary MJPG .avi, looped and
read frame by frame (the loop runs as fast as the model allows: any cost of serving shows up as
lost FPS). The viewers are a separate process (as browsers on other machines would be) reading
/stream.mjpg from 127.0.0.1 and discarding the JPEGs. The memory run reads the video through
the capture thread at --memory-fps (default 5: the machine is shared; the serving code's memory
does not depend on the frame rate) while 1-5 viewers come and go every few seconds, some closing
mid-frame. Never imports torch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "edgesqueeze" / "camera" / "__init__.py").is_file():  # this checkout's package
    sys.path.insert(0, str(_CHECKOUT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

FPS_TARGET_PCT = 5.0
GROWTH_TARGET_PCT = 5.0

# the viewers: N threads, each reading the stream for `seconds` (0: until killed) and dropping it
VIEWERS = r"""
import socket, sys, threading, time, random
port, n, seconds, seed = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
def view():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    end = time.monotonic() + (seconds * rnd.uniform(0.5, 1.0) if seconds else 1e9)
    while time.monotonic() < end and s.recv(65536):
        pass
    s.close()  # often in the middle of a frame
ts = [threading.Thread(target=view, daemon=True) for _ in range(n)]
[t.start() for t in ts]
[t.join() for t in ts]
"""


def viewers(port: int, n: int, seconds: float = 0.0, seed: int = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", VIEWERS, str(port), str(n), str(seconds), str(seed)])


class Demo:
    """run_loop in a thread publishing to a LiveView served on 127.0.0.1; frame times recorded."""

    def __init__(self, video: Path, clf, fp32, *, serve_fps: float, threaded: bool, pace_fps: float | None = None):
        from edgesqueeze.camera import ShadowTracker, VideoSource, run_loop
        from edgesqueeze.camera.live import LiveView
        from edgesqueeze.camera.web import WebServer

        self.stop_flag = threading.Event()
        self.times: list[float] = []
        self.view = LiveView(serve_fps=serve_fps, shadow_window=50 if fp32 else None, title="benchmark")
        self.server = WebServer(self.view, host="127.0.0.1", port=0).start()
        self.shadow = ShadowTracker(fp32, every=10, max_load=0.25) if fp32 is not None else None
        self.source = VideoSource(video, loop=True)

        def on_frame(r):
            self.times.append(time.perf_counter())
            if len(self.times) > 100_000:
                del self.times[:50_000]
            return not self.stop_flag.is_set()

        self.thread = threading.Thread(target=lambda: run_loop(
            self.source, clf, shadow=self.shadow, on_frame=on_frame, publish=self.view.publish, threaded=threaded,
            pace_fps=pace_fps, shadow_wait=False), daemon=True)
        self.thread.start()

    def fps(self, seconds: float) -> float:
        n0, t0 = len(self.times), time.perf_counter()
        time.sleep(seconds)
        return (len(self.times) - n0) / (time.perf_counter() - t0)

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)
        self.server.close()
        self.view.close()
        if self.shadow is not None:
            self.shadow.close()
        self.source.close()


def fps_rounds(demo: Demo, *, rounds: int, seconds: float, n_viewers: int, log) -> list[tuple[float, float]]:
    """`rounds` pairs of adjacent rounds, without and with viewers (the order flips each pair,
    so a drift in the machine's load hits both sides alike): [(fps without, fps with), ...]."""
    pairs = []
    for i in range(rounds):
        got = {}
        for with_viewers in ((False, True) if i % 2 == 0 else (True, False)):
            proc = viewers(demo.server.port, n_viewers) if with_viewers else None
            time.sleep(1.0)  # connected and streaming (or settled after the last ones left)
            fps = demo.fps(seconds)
            if proc is not None:
                connected = demo.view.viewers
                proc.kill()
                proc.wait()
                log(f"  pair {i + 1}: {n_viewers} viewers ({connected} connected): {fps:.2f} FPS, "
                    f"{demo.view.encoded} JPEGs so far")
            else:
                log(f"  pair {i + 1}: no viewer: {fps:.2f} FPS")
            got[with_viewers] = fps
        pairs.append((got[False], got[True]))
    return pairs


def encode_cost(view, runs: int = 60) -> float:
    """Median ms to draw the overlay on a copy of the newest frame and JPEG-encode it (the
    encoder thread's work per stream frame, whatever the number of viewers)."""
    image, result, annotated = view._frame
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        view.encode(image, result, annotated)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def memory_run(demo: Demo, *, minutes: float, log) -> dict:
    from edgesqueeze.sysinfo import rss_mb

    start = time.monotonic()
    end = start + 60 * minutes
    warm_at = start + min(60.0, 60 * minutes / 5)
    samples, base, visits, seed = [], None, 0, 0
    threads_before = threading.active_count()
    procs: list[subprocess.Popen] = []
    next_sample = start
    while time.monotonic() < end:
        seed += 1
        procs = [p for p in procs if p.poll() is None]
        if len(procs) < 3:  # 1-5 viewers staying 2-8 s, a new group every ~2 s
            n = 1 + seed % 5
            procs.append(viewers(demo.server.port, n, seconds=2 + seed % 7, seed=seed))
            visits += n
        time.sleep(2.0)
        now = time.monotonic()
        if now >= next_sample:
            v = rss_mb()
            samples.append((now - start, v))
            if base is None and now >= warm_at:
                base = v
            next_sample = now + max(5.0, 60 * minutes / 60)
    for p in procs:
        p.wait(30)
    time.sleep(demo.server.keepalive + 1.5)  # the last viewers' threads notice and end
    after = rss_mb()
    samples.append((time.monotonic() - start, after))
    values = [v for t, v in samples if t >= warm_at - start]
    log(f"  memory: {len(samples)} samples, {visits} viewer visits")
    return {"base": base or samples[0][1], "end": after, "peak": max(values), "visits": visits, "samples": samples,
            "threads_before": threads_before, "threads_after": threading.active_count(),
            "connections_after": demo.server.connections, "viewers_after": demo.view.viewers,
            "frames": len(demo.times), "encoded": demo.view.encoded}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="INT8 model (.tflite or .onnx)")
    p.add_argument("--fp32", help="FP32 model for the shadow (optional)")
    p.add_argument("--threads", type=int, default=None, help="INT8 threads (default: all cores, as the demo)")
    p.add_argument("--viewers", type=int, default=5)
    p.add_argument("--rounds", type=int, default=10, help="pairs of rounds, without and with viewers (10)")
    p.add_argument("--round-seconds", type=float, default=4.0)
    p.add_argument("--serve-fps", type=float, default=10.0)
    p.add_argument("--minutes", type=float, default=1.0, help="length of the memory run (1; 0: skip)")
    p.add_argument("--memory-fps", type=float, default=5.0, help="source rate during the memory run (5)")
    p.add_argument("--frames", type=int, default=120, help="frames in the looped video (120)")
    args = p.parse_args(argv)

    import cv2

    import camera_overhead
    from edgesqueeze import sysinfo
    from edgesqueeze.metrics import format_table
    from edgesqueeze.runtime import Classifier

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    clf = Classifier.load(args.model, threads=args.threads)
    fp32 = Classifier.load(args.fp32, threads=1) if args.fp32 else None
    print(f"machine: {sysinfo.cpu_model()}, {sysinfo.usable_cores()} usable cores (shared with other work: "
          f"compare within this run only); Python {sys.version.split()[0]}, OpenCV {cv2.__version__}")
    print(f"INT8: {clf!r}" + (f"; FP32 shadow: {fp32!r}, every 10th frame" if fp32 else ""))
    with tempfile.TemporaryDirectory(prefix="camera_web-") as tmp:
        video = camera_overhead.make_video(Path(tmp) / "frames.avi", args.frames)
        demo = Demo(video, clf, fp32, serve_fps=args.serve_fps, threaded=False)
        try:
            demo.fps(3.0)  # warm-up
            log(f"FPS: {args.rounds} pairs of {args.round_seconds:g} s rounds")
            pairs = fps_rounds(demo, rounds=args.rounds, seconds=args.round_seconds, n_viewers=args.viewers,
                               log=log)
            encode_ms = encode_cost(demo.view)
        finally:
            demo.close()
        mem = None
        if args.minutes > 0:
            log(f"memory: {args.minutes:g} min, source at {args.memory_fps:g} FPS, viewers coming and going")
            demo = Demo(video, clf, fp32, serve_fps=args.serve_fps, threaded=True, pace_fps=args.memory_fps)
            try:
                demo.fps(2.0)
                mem = memory_run(demo, minutes=args.minutes, log=log)
            finally:
                demo.close()

    none, some = [a for a, _ in pairs], [b for _, b in pairs]
    ratios = sorted(b / a for a, b in pairs)
    ratio = statistics.median(ratios)
    diff = 100.0 * (ratio - 1.0)
    print()
    print(format_table(
        ["viewers", "rounds", "FPS (median)", "FPS per round"],
        [["0", len(none), statistics.median(none), ", ".join(f"{v:.2f}" for v in none)],
         [str(args.viewers), len(some), statistics.median(some), ", ".join(f"{v:.2f}" for v in some)]]))
    print(f"FPS({args.viewers} viewers) / FPS(0), median of the {len(pairs)} adjacent pairs: {ratio:.3f} "
          f"({diff:+.2f} %; pairs from {ratios[0]:.3f} to {ratios[-1]:.3f}); target: within {FPS_TARGET_PCT:g} %: "
          f"{'PASS' if abs(diff) < FPS_TARGET_PCT else 'FAIL'}. Stream capped at {args.serve_fps:g} JPEG/s.")
    print(f"The encoder's work: {encode_ms:.2f} ms per 640x480 JPEG (overlay + encode, median) x {args.serve_fps:g} "
          f"JPEG/s = {encode_ms * args.serve_fps / 10:.1f} % of one core, the same for 1 or {args.viewers} viewers.")
    if mem is not None:
        growth = 100.0 * (mem["end"] - mem["base"]) / mem["base"]
        print()
        print(format_table(["memory run", "minutes", "viewer visits", "RSS after warm-up MB", "RSS end MB",
                            "RSS peak MB", "growth", f"target (< {GROWTH_TARGET_PCT:g} %)", "threads before/after",
                            "open connections after"],
                           [["viewers come and go", args.minutes, mem["visits"], mem["base"], mem["end"], mem["peak"],
                             f"{growth:+.2f} %", "PASS" if growth < GROWTH_TARGET_PCT else "FAIL",
                             f"{mem['threads_before']}/{mem['threads_after']}", mem["connections_after"]]],
                           floatfmt=".1f"))
        print("  RSS (s: MB): " + ", ".join(f"{t:.0f}: {v:.1f}" for t, v in mem["samples"]))
    heavy = sorted(m for m in sys.modules if m.split(".")[0] == "torch")
    print(f"\ntorch imported: {'yes' if heavy else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
