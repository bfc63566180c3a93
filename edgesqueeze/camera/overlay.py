"""What a person sees: the text overlay on a frame, the OpenCV window, and the annotated video
written with --out."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError, OptionError
from .sources import _cv2


def short_label(label: str, n: int = 28) -> str:
    """The first name of a label ("tabby, tabby cat" -> "tabby"), at most n characters."""
    label = label.split(",")[0].strip() or label
    return label if len(label) <= n else label[: n - 1] + "~"


def draw_overlay(img: np.ndarray, lines: Sequence[str], warning: str | None = None) -> np.ndarray:
    """Text lines at the top left, white on a filled dark box (readable on any picture); the
    warning in red below them. Draws in place and returns `img`."""
    cv2 = _cv2()
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.4, img.shape[1] / 1280.0)
    step = int(round(30 * scale)) + 6
    texts = [(t, (255, 255, 255)) for t in lines] + ([("! " + warning, (60, 60, 255))] if warning else [])
    width = max(cv2.getTextSize(t, font, scale, 1)[0][0] for t, _ in texts) if texts else 0
    cv2.rectangle(img, (0, 0), (min(width + 16, img.shape[1] - 1), step * len(texts) + 8), (0, 0, 0), -1)
    for i, (text, colour) in enumerate(texts):
        cv2.putText(img, text, (8, step * (i + 1)), font, scale, colour, 1, cv2.LINE_AA)
    return img


def overlay_lines(top: Sequence[tuple[str, float]], fps: float | None, infer_ms: float,
                  agreement: float | None = None, comparisons: int = 0, window: int | None = None) -> list[str]:
    """The overlay's text: the top classes with scores, FPS and inference time, and (with a
    shadow, `window` not None) the rolling FP32 agreement."""
    lines = [f"{i + 1}. {short_label(label)} {score:.2f}" for i, (label, score) in enumerate(top)]
    lines.append(f"{fps or 0:.1f} FPS  infer {infer_ms:.1f} ms")
    if window is not None:
        lines.append("FP32 agree: n/a" if agreement is None else
                     f"FP32 agree {agreement:.0f}% (last {min(comparisons, window)})")
    return lines


def gui_unavailable(environ=None) -> str | None:
    """Why cv2.imshow cannot work here, or None. Checked before any window call: a Qt build of
    OpenCV without a display aborts the whole process instead of raising."""
    env = os.environ if environ is None else environ
    info = _cv2().getBuildInformation()
    gui = info.split("GUI:", 1)[1].split("\n", 1)[0].strip() if "GUI:" in info else "?"
    if gui.upper() == "NONE":
        return "this OpenCV has no GUI support (opencv-python-headless; install opencv-python for a window)"
    if sys.platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        return "no display (DISPLAY is not set)"
    return None


class CvWindow:
    """cv2.imshow; `show` returns False when q or Esc was pressed (or the window was closed)."""

    def __init__(self, title: str = "edgesqueeze"):
        cv2 = _cv2()
        self.title = title
        why = gui_unavailable()
        if why is None:
            try:
                cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
            except cv2.error as e:
                why = f"OpenCV cannot open one ({' '.join(str(e).split())[:120]})"
        if why:
            raise OptionError(f"cannot open a window: {why}; use --headless (JSON lines) and/or --out video.mp4")
        self._shown = False

    def poll(self) -> bool:
        """Handle window events while no frame comes; False when q or Esc was pressed."""
        return (_cv2().waitKey(1) & 0xFF) not in (ord("q"), 27)

    def show(self, img: np.ndarray) -> bool:
        cv2 = _cv2()
        cv2.imshow(self.title, img)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            return False
        self._shown = True
        return True

    def close(self) -> None:
        try:
            _cv2().destroyWindow(self.title)
        except Exception:  # noqa: BLE001
            pass


class VideoOut:
    """Writes frames to a video file, opened on the first frame (its size); later frames of
    another size are resized. .mp4 -> mp4v, anything else (.avi, .mkv) -> MJPG."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0):
        self.path, self.fps = Path(path), fps
        if not self.path.parent.is_dir():
            raise DataError(f"--out {self.path}: folder {self.path.parent} does not exist")
        self._w = None
        self._size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, img: np.ndarray) -> None:
        cv2 = _cv2()
        h, w = img.shape[:2]
        if self._w is None:
            code = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*code), self.fps, (w, h))
            if not self._w.isOpened():
                raise DataError(f"--out {self.path}: OpenCV cannot write this video ({code}); try a .avi file")
            self._size = (w, h)
        if (w, h) != self._size:
            img = cv2.resize(img, self._size, interpolation=cv2.INTER_LINEAR)
        self._w.write(img)
        self.frames += 1

    def close(self) -> None:
        if self._w is not None:
            self._w.release()
