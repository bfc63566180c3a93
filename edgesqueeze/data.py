"""Images, labels, preprocessing and the calibration/evaluation split (numpy + OpenCV, no torch).

Preprocessing is described by the model (`Preprocess` in its arch or in an exported file's
metadata), never remembered by the caller:

- `to_uint8_input(img, pre)`: resize and centre-crop a BGR uint8 frame and put its channels in
  the model's order. This is what an INT8 model with folded normalisation takes (HWC uint8).
- `normalize(x, pre)`: (x - mean) / std in float32, NCHW — what the FP32 model takes.

Which images and labels a path holds (labels CSV, ImageFolder root, synset-named or plain
folder) is decided in `imagesets` (`open_images`; `load_dataset` returns its images as a list,
`read_labels_csv` a CSV's); those names are importable from here too.

The split is by a hash of each file's name, so it does not depend on listing order, numpy's RNG
or which other files are present: `calibration_fraction` of names go to calibration.
"""

from __future__ import annotations

import hashlib
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .arch import Preprocess
from .errors import DataError, missing_extra
from .imagesets import (  # noqa: F401  (the labels side of data, kept importable from here)
    IMAGE_SUFFIXES,
    LabelledImage,
    labelled_folder,
    list_images,
    load_dataset,
    looks_synset_named,
    read_class_names,
    read_labels_csv,
    read_synsets,
)

SPLIT_SALT = "edgesqueeze-split-v1"
DEFAULT_CALIBRATION_FRACTION = 1 / 3


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise missing_extra("opencv (cv2)", "camera") from e
    return cv2


# ---------------------------------------------------------------- images


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a BGR uint8 HxWx3 array (grey and alpha are converted, 16-bit is
    scaled to 8-bit). Raises DataError naming the file when it cannot be used."""
    cv2 = _cv2()
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not an image file")
    if not path.is_file():
        raise DataError(f"{path}: not found; check the path of the image")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); replace or remove it")
    # imdecode from bytes: imread cannot open non-ASCII paths on every platform
    raw = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: not a readable image (OpenCV cannot decode it); replace or remove it")
    return as_bgr8(img, source=str(path))


def as_bgr8(img: np.ndarray, *, source: str = "frame") -> np.ndarray:
    """Any decoded image (grey, BGR, BGRA; 8 or 16 bit) as contiguous BGR uint8."""
    cv2 = _cv2()
    if not isinstance(img, np.ndarray) or img.size == 0:
        raise DataError(f"{source}: empty image")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        img = np.clip(img * 255.0 if img.max() <= 1.0 else img, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"{source}: pixel type {img.dtype} is not supported; use 8- or 16-bit images")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise DataError(f"{source}: shape {img.shape} is not an image (need HxW, HxWx3 or HxWx4)")
    return np.ascontiguousarray(img)


def check_frame(frame, *, source: str = "frame") -> np.ndarray:
    """A camera frame or decoded image as contiguous BGR uint8 H x W x 3, or DataError naming
    the problem: None, not an array, empty, a pixel type other than uint8/uint16, or a shape
    that is not H x W (x 1/3/4). Grey, BGRA and 16-bit frames are converted (as_bgr8); the usual
    BGR uint8 frame is returned as it is. Shared by the runtime and the camera loop."""
    if frame is None:
        raise DataError(f"{source}: no image (got None); the camera or decoder returned nothing")
    if not isinstance(frame, np.ndarray):
        raise DataError(f"{source}: expected a numpy image array, got {type(frame).__name__}")
    if frame.size == 0:
        raise DataError(f"{source}: empty image (shape {tuple(frame.shape)})")
    if frame.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{source}: pixel type {frame.dtype} is not supported; pass uint8 BGR frames "
                        "(as OpenCV gives them), or uint16")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))):
        raise DataError(f"{source}: shape {tuple(frame.shape)} is not an image; pass H x W (grey), "
                        "H x W x 3 (BGR) or H x W x 4 (BGRA)")
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.flags.c_contiguous:
        return frame  # the usual case: nothing to do
    return as_bgr8(frame, source=source)


MAX_ASPECT = 16  # torchvision-style resize: longest side at most 16x the shortest


def _resize_window(size: int, resized: int, crop: int) -> tuple[int, int, int, int] | None:
    """Along one axis of a downscale from `size` to `resized` pixels: (s0, s1, r0, r1) such that
    resizing source pixels [s0, s1) to r1 - r0 pixels gives exactly resized pixels [r0, r1) of
    the whole resize, with the centre `crop` inside [r0, r1) (one pixel of margin each side).
    The window keeps the scale ratio exact (r0 and r1 are multiples of the ratio's denominator),
    so OpenCV computes the same source positions and fixed-point weights for every pixel kept.
    None when no smaller window exists (an upscale, or a ratio like 640/341 with a large
    denominator)."""
    if resized >= size:
        return None
    ratio = Fraction(size, resized)
    p, q = ratio.numerator, ratio.denominator
    start = (resized - crop) // 2
    r0 = max(0, start - 1) // q * q
    r1 = min(resized, -(-min(resized, start + crop + 1) // q) * q)
    if r0 == 0 and r1 == resized:
        return None
    return r0 * p // q, (size if r1 == resized else r1 * p // q), r0, r1


def to_uint8_input(img_bgr: np.ndarray, pre: Preprocess, *, windowed: bool = True) -> np.ndarray:
    """Resize and centre-crop a BGR uint8 frame; channels in the model's order. HxWx3 uint8.

    caffe: resize to exactly pre.resize (h, w); torchvision: resize the short side to pre.resize.
    Both with bilinear interpolation, then a centre crop of pre.crop.

    The interpolation is cv2.INTER_LINEAR_EXACT, not INTER_LINEAR: INTER_LINEAR's uint8 path is
    vectorised differently per CPU, and OpenCV's aarch64 and x86 builds were seen to disagree by
    +-1 on ~20 % of the pixels of the same photo (demos/board_check.py), which moved top-1 on
    2 of 100 images between a Pi and a PC. INTER_LINEAR_EXACT is OpenCV's bit-exact bilinear
    (fixed-point weights, the same result on every platform); it differs from INTER_LINEAR by
    +-1 on ~12 % of the pixels and costs ~0.25 ms more per 640x480 frame here.

    Only the part of the frame the crop needs is resized when that part is a tenth or more
    smaller (`_resize_window`: same ratio, same weights, so the pixels are identical to resizing
    the whole frame; tests/test_camera_preprocess.py checks this on many frame sizes): for a
    640x480 frame and the Caffe 256x256 / 227 preprocessing that is 570x435 source pixels
    instead of 640x480 (0.436 ms against 0.505 ms measured on an AMD EPYC: OpenCV's exact resize
    costs in proportion to its output, which stays the same). Where no such window exists (e.g.
    640x480 with torchvision's short side 256: 640/341 across) the whole frame is resized.
    `windowed=False` always resizes the whole frame (the same pixels: a baseline to time)."""
    cv2 = _cv2()
    h, w = img_bgr.shape[:2]
    if isinstance(pre.resize, tuple):
        rh, rw = pre.resize
    else:
        short = pre.resize
        if max(h, w) > MAX_ASPECT * min(h, w):
            # the short side goes to `short`, so a 1x10000 frame would become 256x2,560,000
            # (gigabytes) before the crop: refuse it instead of running a board out of memory
            raise DataError(f"frame of {w}x{h} pixels: aspect ratio above {MAX_ASPECT}:1 would resize to "
                            f"{short}x{short * max(h, w) // max(1, min(h, w))}; crop it to the region of interest first")
        if h <= w:
            rh, rw = short, max(short, int(round(w * short / h)))
        else:
            rh, rw = max(short, int(round(h * short / w))), short
    c = pre.crop
    if rh < c or rw < c:
        raise DataError(f"resize to {rh}x{rw} is smaller than the {c}x{c} crop; fix the preprocessing")
    top, left = (rh - c) // 2, (rw - c) // 2
    if (rh, rw) != (h, w) and windowed:
        ys = _resize_window(h, rh, c) or (0, h, 0, rh)
        xs = _resize_window(w, rw, c) or (0, w, 0, rw)
        if (ys[1] - ys[0]) * (xs[1] - xs[0]) <= 0.9 * h * w:
            img_bgr = img_bgr[ys[0]:ys[1], xs[0]:xs[1]]
            top, left = top - ys[2], left - xs[2]
            rh, rw = ys[3] - ys[2], xs[3] - xs[2]
    if (rh, rw) != img_bgr.shape[:2]:
        img_bgr = cv2.resize(img_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR_EXACT)
    out = img_bgr[top : top + c, left : left + c]
    if pre.channel_order == "RGB":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def normalize(x_hwc: np.ndarray, pre: Preprocess) -> np.ndarray:
    """uint8 HWC (or NHWC) in the model's channel order -> float32 NCHW (x - mean) / std."""
    x = np.asarray(x_hwc, dtype=np.float32)
    x = (x - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
    if x.ndim == 3:
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def load_pixels(items: Sequence, pre: Preprocess) -> np.ndarray:
    """Labelled images (or paths) as the exported models' input: uint8 N x S x S x 3."""
    return np.stack([to_uint8_input(load_image(i.path if isinstance(i, LabelledImage) else i), pre)
                     for i in items])


def preprocess_file(path: str | os.PathLike, pre: Preprocess) -> np.ndarray:
    """A file as the FP32 model's input: float32 1x3xHxW."""
    return normalize(to_uint8_input(load_image(path), pre), pre)


# ---------------------------------------------------------------- split


def split_key(name: str) -> float:
    """A number in [0, 1) from the file name alone (sha256 of salt + name)."""
    h = hashlib.sha256((SPLIT_SALT + name).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_calibration(
    items: Sequence[LabelledImage], *, calibration_fraction: float = DEFAULT_CALIBRATION_FRACTION
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(calibration, evaluation): disjoint, decided per file name by `split_key(name) <
    calibration_fraction`. On the 600 shared sample images the default 1/3 gives about 200/400."""
    if not 0.0 < calibration_fraction < 1.0:
        raise DataError(f"calibration_fraction={calibration_fraction} must lie strictly between 0 and 1")
    calib, evals = [], []
    for it in items:
        (calib if split_key(it.path.name) < calibration_fraction else evals).append(it)
    return calib, evals


def iter_batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), batch_size):
        yield items[i : i + batch_size]


def stack_inputs(paths: Iterable[Path], pre: Preprocess) -> np.ndarray:
    """Files -> float32 NCHW batch, normalised for the FP32 model."""
    return np.concatenate([preprocess_file(p, pre) for p in paths], axis=0)
