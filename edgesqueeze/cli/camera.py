"""`edgesqueeze camera` (and demos/camera.py): the options of the live demo, and the command
that loads the models, opens the source, serves the page and prints the results.

The demo itself lives in `edgesqueeze.camera` (numpy + OpenCV + one runtime, never torch);
this module only parses, checks and formats.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from pathlib import Path

from ..camera import (CvWindow, ShadowTracker, VideoOut, VideoSource, format_summary, open_source, run_loop)
from ..camera.systemd import UNIT_NAME, unit_model, unit_source, unit_text, unit_user
from ..errors import OptionError, run_command

log = logging.getLogger("edgesqueeze.camera")

EXAMPLES = """examples:
  edgesqueeze camera --model export/squeezenet1_0-affine-int8.tflite --source 0
  edgesqueeze camera --model m.tflite --source picamera2 --fp32 export/squeezenet1_0-fp32.onnx
  edgesqueeze camera --model m.tflite --source clip.mp4 --headless --max-frames 100 > frames.jsonl
  edgesqueeze camera --model m.tflite --source images/ --loop --headless --out annotated.avi

live page in a browser (http://127.0.0.1:8080/ on this machine; on the LAN with an access token):
  edgesqueeze camera --model m.tflite --source 0 --headless --serve 8080
  edgesqueeze camera --model m.tflite --source picamera2 --headless --serve 0.0.0.0:8080 \\
      --token-file ~/.edgesqueeze-token

autostart at boot (systemd; the unit runs these options headless, restarts on failure, JSON
lines go to the journal: journalctl -u edgesqueeze-camera -f -o cat):
  edgesqueeze camera --model m.tflite --source 0 --print-systemd-unit
  sudo $(command -v edgesqueeze) camera --model m.tflite --source 0 \\
      --install-systemd-unit /etc/systemd/system/edgesqueeze-camera.service \\
      && sudo systemctl daemon-reload && sudo systemctl enable --now edgesqueeze-camera
"""


def default_model() -> str | None:
    found = sorted(Path("export").glob("*-int8.tflite")) + sorted(Path("export").glob("*-int8.onnx"))
    return str(found[0]) if found else None


def configure_parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--model", help="the INT8 model (.tflite or .onnx; default: the first export/*-int8.tflite)")
    p.add_argument("--source", default="0",
                   help="camera index (0), /dev/videoN, stream URL, 'picamera2', a video file, an image "
                   "folder or an image (default 0)")
    p.add_argument("--loop", action="store_true", help="restart a video or image folder at its end")
    p.add_argument("--headless", action="store_true",
                   help="no window: one JSON line per processed frame on stdout, summary line last")
    p.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N processed frames")
    p.add_argument("--out", metavar="VIDEO", help="also write the annotated frames to this video (.mp4 / .avi)")
    p.add_argument("--fp32", metavar="MODEL", help="FP32 model (.onnx or .tflite) to track INT8 agreement live")
    p.add_argument("--shadow-every", type=int, default=10, metavar="N",
                   help="run the FP32 model on every N-th frame (10); on a video or folder read frame by "
                   "frame every N-th frame is compared, on a live source busy or resting turns are skipped")
    p.add_argument("--window", type=int, default=50, metavar="K",
                   help="rolling agreement over the last K comparisons (50)")
    p.add_argument("--warn-below", type=float, default=90.0, metavar="PCT",
                   help="warn when the rolling agreement falls below this percentage (90)")
    p.add_argument("--min-comparisons", type=int, default=10, help="no warning before this many comparisons (10)")
    p.add_argument("--shadow-max-load", type=float, default=0.25, metavar="FRACTION",
                   help="on a live source the FP32 worker rests after each run so that it is busy at most this "
                   "fraction of one core (0.25); frames handed over while it rests are skipped")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads of the INT8 model (default: every core this process may use)")
    p.add_argument("--max-reconnects", type=int, default=10,
                   help="camera reconnect attempts without a frame before giving up (-1: forever; 10)")
    p.add_argument("--capture", choices=["auto", "thread", "direct"], default="auto",
                   help="auto: capture thread for cameras, direct reads (every frame) for files; "
                   "thread on a file plays it in real time, dropping frames the model cannot keep up with")
    p.add_argument("--width", type=int, default=640, help="camera frame width to request (640)")
    p.add_argument("--height", type=int, default=480, help="camera frame height to request (480)")
    p.add_argument("--fps", type=float, default=30.0,
                   help="rate of an image folder, and of --out when the source has none (30)")
    web = p.add_argument_group("live page in a browser")
    web.add_argument("--serve", metavar="[HOST:]PORT",
                     help="serve the live page (annotated stream, top classes, FPS, FP32 agreement) at "
                     "http://HOST:PORT/ (HOST 127.0.0.1 when omitted: this machine only). Any other address, "
                     "e.g. 0.0.0.0:8080 for the LAN, requires an access token: the full URL with ?token=... "
                     "is printed once at start. Plain HTTP: anyone on the network path can read the traffic")
    web.add_argument("--serve-fps", type=float, default=10.0, metavar="FPS",
                     help="at most this many stream frames per second, JPEG-encoded once for all viewers (10)")
    web.add_argument("--token-file", metavar="PATH",
                     help="keep the access token in this file (created with mode 0600 when missing) so the URL "
                     "survives restarts; also requires the token on 127.0.0.1")
    svc = p.add_argument_group("autostart (systemd)")
    how = svc.add_mutually_exclusive_group()
    how.add_argument("--print-systemd-unit", action="store_true",
                     help="print a systemd service that runs this command (headless) at boot, then exit")
    how.add_argument("--install-systemd-unit", metavar="PATH",
                     help="write that service to PATH (a .service file, e.g. /etc/systemd/system/"
                     "edgesqueeze-camera.service; written whole or not at all), then exit")
    svc.add_argument("--unit-user", metavar="USER",
                     help="User= of the service (default: who runs this; under sudo, $SUDO_USER)")
    return p


def add_camera_parser(subparsers) -> argparse.ArgumentParser:
    """`edgesqueeze camera ...`: add to the CLI's subparsers (sets func=run_camera)."""
    p = subparsers.add_parser("camera", help="real-time demo: INT8 model on a camera, video or folder, "
                              "live FP32 agreement, optional live web page", epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    p.set_defaults(func=run_camera)
    return p


def check_args(args) -> None:
    """OptionError naming the option and the allowed values; nothing is opened or loaded."""
    if args.max_frames is not None and args.max_frames < 1:
        raise OptionError(f"--max-frames {args.max_frames}: must be at least 1")
    if args.shadow_every < 1:
        raise OptionError(f"--shadow-every {args.shadow_every}: must be at least 1")
    if args.window < 1:
        raise OptionError(f"--window {args.window}: must be at least 1")
    if not 0 <= args.warn_below <= 100:
        raise OptionError(f"--warn-below {args.warn_below}: a percentage, 0 to 100")
    if args.fps <= 0:
        raise OptionError(f"--fps {args.fps}: must be positive")
    if args.shadow_max_load is not None and not 0 < args.shadow_max_load <= 1:
        raise OptionError(f"--shadow-max-load {args.shadow_max_load}: a fraction of one core, above 0 and at most 1")
    serve = getattr(args, "serve", None)
    if serve is not None:
        from ..camera.access import parse_listen

        parse_listen(serve)
    serve_fps = getattr(args, "serve_fps", 10.0)
    if not 0 < serve_fps <= 60:
        raise OptionError(f"--serve-fps {serve_fps}: above 0 and at most 60 (10: smooth enough, cheap to encode)")
    if getattr(args, "token_file", None) and serve is None:
        raise OptionError("--token-file: only used with --serve; add --serve [HOST:]PORT")


def _print_json(doc: dict) -> bool:
    try:
        sys.stdout.write(json.dumps(doc) + "\n")
        sys.stdout.flush()
        return True
    except BrokenPipeError:  # `| head`: stop quietly
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - avoid a second error at exit
        except OSError:
            pass
        return False


def _setup_logging() -> None:
    if not log.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("edgesqueeze camera: %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.WARNING)
        log.propagate = False


# ---------------------------------------------------------------- autostart (systemd)

# options that unit_command writes itself (made absolute, or never wanted in a service)
_UNIT_EXCLUDED = {"help", "model", "source", "headless", "fp32", "out", "token_file", "print_systemd_unit",
                  "install_systemd_unit", "unit_user"}


def unit_command(args, *, python: str | None = None) -> list[str]:
    """The argv of the service: this Python (`sys.executable`, not resolved: in a venv it must
    stay the venv's python) -m edgesqueeze.cli camera, absolute paths, --headless, and every
    other option that differs from its default."""
    check_args(args)
    model = args.model or default_model()
    if not model:
        raise OptionError("no --model given and no export/*-int8.tflite here; pass --model PATH")
    argv = [os.path.abspath(python or sys.executable), "-m", "edgesqueeze.cli", "camera",
            "--model", unit_model("--model", model), "--source", unit_source(str(args.source)), "--headless"]
    if args.fp32:
        argv += ["--fp32", unit_model("--fp32", args.fp32)]
    for option, value in (("--out", args.out), ("--token-file", getattr(args, "token_file", None))):
        if value:
            path = Path(value).expanduser().absolute()
            if not path.parent.is_dir():
                raise OptionError(f"{option} {value}: folder {path.parent} does not exist; create it first")
            argv += [option, str(path)]
    for action in configure_parser(argparse.ArgumentParser(add_help=False))._actions:
        if action.dest in _UNIT_EXCLUDED or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = action.option_strings[0]
        argv += [flag] if isinstance(action, argparse._StoreTrueAction) else [flag, str(value)]
    return argv


def systemd_unit(args, *, python: str | None = None, user: str | None = None,
                 workdir: str | os.PathLike | None = None) -> str:
    """A systemd service that runs `edgesqueeze camera` with these options at boot, headless
    (one JSON line per frame on stdout -> the journal). Raises ModelFileError / DataError /
    OptionError for a model, source or user that does not exist, before anything is printed or
    written."""
    argv = unit_command(args, python=python)
    user = user or unit_user(args.unit_user)
    network = "://" in argv[argv.index("--source") + 1]  # a stream: start once the network is up
    if getattr(args, "serve", None):
        from ..camera.access import is_loopback, parse_listen

        network = network or not is_loopback(parse_listen(args.serve)[0])  # serving the LAN
    return unit_text(argv, user=user, workdir=workdir or Path.cwd(), network=network)


def _systemd(args) -> int:
    """--print-systemd-unit / --install-systemd-unit: the whole unit is built (and every path
    checked) first; it is printed, or written through atomic_output (all or nothing)."""
    target = None
    if args.install_systemd_unit:
        target = Path(args.install_systemd_unit).expanduser()
        if target.suffix != ".service":
            raise OptionError(f"--install-systemd-unit {target}: a systemd service file name must end in "
                              f".service, e.g. /etc/systemd/system/{UNIT_NAME}")
        from ..export.files import check_output_path

        check_output_path(target)  # a missing or read-only folder: say so before anything else
    text = systemd_unit(args)
    if target is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    from ..export.files import atomic_output

    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"edgesqueeze camera: wrote {target}; now: sudo systemctl daemon-reload && "
          f"sudo systemctl enable --now {target.stem}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- the command


def _start_server(args, *, title: str, shadow_window: int | None):
    """The live view and its server (started), or (None, None) without --serve."""
    if not getattr(args, "serve", None):
        return None, None
    from ..camera.access import parse_listen, read_token_file
    from ..camera.live import LiveView
    from ..camera.web import WebServer

    host, port = parse_listen(args.serve)
    token = read_token_file(args.token_file) if args.token_file else None
    view = LiveView(serve_fps=args.serve_fps, shadow_window=shadow_window, title=title)
    server = WebServer(view, host=host, port=port, token=token, require_token=True if token else None)
    server.start()
    return view, server


def run_camera(args) -> int:
    """The `edgesqueeze camera` command. 0 on a normal end (end of the video, --max-frames, q/Esc,
    Ctrl-C: all with a summary on stderr), 1 when the source failed for good."""
    import signal

    check_args(args)
    if getattr(args, "print_systemd_unit", False) or getattr(args, "install_systemd_unit", None):
        return _systemd(args)  # nothing is opened or loaded
    _setup_logging()
    model = args.model or default_model()
    if not model:
        raise OptionError("no --model given and no export/*-int8.tflite here; pass --model PATH "
                          "(make one with `edgesqueeze quantize`)")
    from ..runtime import Classifier

    classifier = Classifier.load(model, threads=args.threads)
    fp32 = Classifier.load(args.fp32, threads=1) if args.fp32 else None
    if fp32 is not None and len(fp32.metadata.labels) != len(classifier.metadata.labels):
        raise OptionError(f"--fp32 {args.fp32} has {len(fp32.metadata.labels)} classes, the INT8 model "
                          f"{len(classifier.metadata.labels)}: they must be the same network")
    on_frame = (lambda r: _print_json(r.to_dict())) if args.headless else None
    threaded = {"auto": None, "thread": True, "direct": False}[args.capture]
    source = writer = display = shadow = view = server = None
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _term(signum, frame):  # SIGTERM (systemd, docker stop) ends the loop like Ctrl-C
            raise KeyboardInterrupt
        old_term = signal.signal(signal.SIGTERM, _term)
    try:
        display = None if args.headless else CvWindow(f"edgesqueeze - {Path(model).name}")
        source = open_source(args.source, loop=args.loop, width=args.width, height=args.height,
                             max_reconnects=args.max_reconnects, fps=args.fps)
        if args.out:
            writer = VideoOut(args.out, fps=source.fps if isinstance(source, VideoSource) else args.fps)
        if fp32 is not None:
            shadow = ShadowTracker(fp32, every=args.shadow_every, window=args.window, warn_below=args.warn_below,
                                   max_load=args.shadow_max_load,
                                   min_comparisons=args.min_comparisons)
        view, server = _start_server(args, title=f"{Path(model).name} on {source.name}",
                                     shadow_window=args.window if fp32 is not None else None)
        if server is not None:
            note = (" (plain HTTP: anyone on the network path can read this address and the pictures)"
                    if server.token else "")
            print(f"edgesqueeze camera: live page at {server.url}{note}", file=sys.stderr, flush=True)
        summary = run_loop(source, classifier, shadow=shadow, headless=args.headless, max_frames=args.max_frames,
                           on_frame=on_frame, display=display, writer=writer, threaded=threaded,
                           publish=view.publish if view is not None else None)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        for thing in (server, view, shadow, source, writer, display):
            if thing is not None:
                thing.close()
    print(f"edgesqueeze camera: {format_summary(summary)}", file=sys.stderr)
    if writer is not None:
        print(f"edgesqueeze camera: wrote {writer.frames} annotated frames to {writer.path}", file=sys.stderr)
    if args.headless:
        _print_json({"summary": True, **summary.to_dict()})
    return 0 if summary.ok else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (demos/camera.py): errors are one line, exit code 2."""
    p = argparse.ArgumentParser(prog="camera", description="Real-time INT8 SqueezeNet demo with live FP32 "
                                "agreement tracking.", epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure_parser(p)
    args = p.parse_args(argv)
    return run_command("camera", lambda: run_camera(args))
