"""The camera's per-frame preprocessing (`data.to_uint8_input`) resizes only the part of the
frame that the centre crop needs where it can: the pixels must stay bit-identical to resizing
the whole frame (what calibration and evaluation used), for both preprocessing layouts and
many frame sizes."""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edgesqueeze.arch import Preprocess  # noqa: E402
from edgesqueeze.data import _resize_window, to_uint8_input  # noqa: E402
from edgesqueeze.errors import DataError  # noqa: E402

CAFFE = Preprocess(style="caffe", channel_order="BGR", resize=(256, 256), crop=227, mean=(104.0, 117.0, 123.0),
                   std=(1.0, 1.0, 1.0))
TORCHVISION = Preprocess(style="torchvision", channel_order="RGB", resize=256, crop=224,
                         mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375))
TORCHVISION_BGR = Preprocess(style="torchvision", channel_order="BGR", resize=256, crop=224, mean=(0.0, 0.0, 0.0),
                             std=(1.0, 1.0, 1.0))


def whole_frame_reference(img: np.ndarray, pre: Preprocess) -> np.ndarray:
    """Resize the whole frame, then crop: the definition the windowed resize must match."""
    h, w = img.shape[:2]
    if isinstance(pre.resize, tuple):
        rh, rw = pre.resize
    else:
        s = pre.resize
        rh, rw = (s, max(s, int(round(w * s / h)))) if h <= w else (max(s, int(round(h * s / w))), s)
    if (rh, rw) != (h, w):
        img = cv2.resize(img, (rw, rh), interpolation=cv2.INTER_LINEAR_EXACT)
    c = pre.crop
    top, left = (rh - c) // 2, (rw - c) // 2
    out = img[top:top + c, left:left + c]
    return np.ascontiguousarray(out[:, :, ::-1] if pre.channel_order == "RGB" else out)


COMMON = [(480, 640), (240, 320), (720, 1280), (1080, 1920), (1944, 2592), (600, 800), (768, 1024), (960, 1280),
          (480, 848), (640, 480), (256, 256), (257, 257), (512, 512), (513, 769), (227, 227), (300, 400), (375, 500),
          (500, 375), (228, 300), (4000, 3000), (120, 160), (100, 150), (256, 341)]


def sizes(n_random: int = 120):
    rng = np.random.default_rng(42)
    extra = [(int(h), int(w)) for h, w in rng.integers(200, 1400, (n_random, 2))]
    return COMMON + extra


@pytest.mark.parametrize("pre", [CAFFE, TORCHVISION, TORCHVISION_BGR], ids=["caffe", "torchvision-rgb", "torchvision-bgr"])
def test_windowed_resize_is_bit_identical_to_the_whole_frame(pre):
    rng = np.random.default_rng(7)
    checked = windowed = 0
    for h, w in sizes():
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if isinstance(pre.resize, int) and max(h, w) > 16 * min(h, w):
            continue
        try:
            ref = whole_frame_reference(img, pre)
        except cv2.error:
            continue
        if ref.shape[:2] != (pre.crop, pre.crop):  # the reference crop ran off a too-small resize
            with pytest.raises(DataError):
                to_uint8_input(img, pre)
            continue
        got = to_uint8_input(img, pre)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        assert np.array_equal(got, ref), (pre.style, h, w, int(np.abs(got.astype(int) - ref).max()))
        checked += 1
        rh, rw = pre.resize if isinstance(pre.resize, tuple) else \
            ((256, max(256, round(w * 256 / h))) if h <= w else (max(256, round(h * 256 / w)), 256))
        windowed += _resize_window(h, rh, pre.crop) is not None or _resize_window(w, rw, pre.crop) is not None
    assert checked >= 100 and windowed >= 15, (checked, windowed)


def test_smooth_and_edge_content_too():
    """Random pixels exercise every weight; a photo-like gradient with hard edges as well."""
    yy, xx = np.mgrid[0:480, 0:640]
    img = np.stack([(xx * 255 // 639), (yy * 255 // 479), ((xx // 40 + yy // 40) % 2) * 255], -1).astype(np.uint8)
    for pre in (CAFFE, TORCHVISION, TORCHVISION_BGR):
        assert np.array_equal(to_uint8_input(img, pre), whole_frame_reference(img, pre))
    # a grey frame (the camera's OpenCV conversion happens before): still identical per channel
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    assert np.array_equal(to_uint8_input(grey, CAFFE), whole_frame_reference(grey, CAFFE))


def test_the_window_for_the_camera_frame():
    # Caffe 640x480 -> 256x256: ratios 5/2 and 15/8 are exact; only 575x450 source pixels are resized
    assert _resize_window(640, 256, 227) == (30, 605, 12, 242)
    assert _resize_window(480, 256, 227) == (15, 465, 8, 248)
    # torchvision 640x480 -> 341x256: 640/341 has no smaller exact window across
    assert _resize_window(640, 341, 224) is None
    assert _resize_window(200, 256, 227) is None  # an upscale: the whole axis
    assert _resize_window(256, 256, 227) is None


def test_the_unwindowed_path_is_the_whole_frame_resize():
    from edgesqueeze.data import to_uint8_input

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for pre in (CAFFE, TORCHVISION_BGR):
        np.testing.assert_array_equal(to_uint8_input(img, pre, windowed=False), whole_frame_reference(img, pre))
