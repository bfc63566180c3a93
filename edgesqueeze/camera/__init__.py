"""Real-time camera demo: the INT8 model on live frames, with an FP32 model tracking its accuracy
and an optional live web page.

Board-side: numpy, OpenCV, one runtime (`edgesqueeze.runtime`) and the standard library; never
torch.

    sources.py  source (camera / video / image folder / picamera2)
    capture.py    -> capture thread -> LatestFrame (1 slot: a newer frame overwrites an unread
                     one, so the loop never works through a backlog; overwritten frames are
                     counted as dropped); a file is read in the loop itself, every frame
    loop.py       -> run_loop: classify (one resize + crop, then the INT8 model) -> overlay /
                     FrameResult per frame (the CLI prints JSON lines) -> publish to the web view
    shadow.py     -> every N-th frame also handed to ShadowTracker: an FP32 model in one
                     background worker thread compares its top-1 with the INT8 top-1 of the
                     same frame; rolling agreement over the last K
    overlay.py  the text overlay, the OpenCV window, the annotated video (--out)
    live.py     LiveView: the newest frame and state for the page; JPEG-encoded at most once
                per frame for all viewers, at a capped rate, only while someone watches
    web.py      WebServer: the page (page.py), /stream.mjpg, /api/state; limits on request
                size, time and connections; a token beyond loopback (access.py)
    systemd.py  the text of a systemd service that runs the demo at boot

Library code returns results (`FrameResult` per frame through a callback, `Summary` at the end);
the `edgesqueeze camera` command (edgesqueeze/cli/camera.py, also `demos/camera.py`) holds the
options and does the printing.

Capture modes: a live source (camera, picamera2, network stream) is read by a capture thread
(`threaded=True`); a video file or image folder is read in the loop itself by default, so every
frame is processed, results are reproducible and the FP32 shadow compares every N-th frame.
`threaded=True` on a file paces the capture thread at the file's frame rate, so it behaves like
a camera (frames dropped when the model is slower than the video).
"""

from .capture import CaptureThread, Captured, LatestFrame
from .loop import TOP_K, FrameResult, Summary, format_summary, run_loop
from .overlay import CvWindow, VideoOut, draw_overlay, gui_unavailable, overlay_lines
from .shadow import ShadowTracker, lower_thread_priority
from .sources import (Backoff, CameraSource, EndOfStream, FolderSource, FrameSource, Picamera2Source, SourceFailed,
                      VideoSource, open_source)
from .systemd import UNIT_NAME, systemd_quote
from ..data import check_frame

__all__ = [
    "Backoff", "CameraSource", "CaptureThread", "Captured", "CvWindow", "EndOfStream", "FolderSource",
    "FrameResult", "FrameSource", "LatestFrame", "Picamera2Source", "ShadowTracker", "SourceFailed", "Summary",
    "TOP_K", "UNIT_NAME", "VideoOut", "VideoSource", "check_frame", "draw_overlay", "format_summary",
    "gui_unavailable", "lower_thread_priority", "open_source", "overlay_lines", "run_loop", "systemd_quote",
]
