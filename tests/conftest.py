"""Shared fixtures. Real data is read from the shared data folder found as the CLI finds it
($EDGESQUEEZE_SHARED, set by .ci/run, else ../shared beside the project); tests that need it are
skipped with the reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def _shared() -> Path | None:
    """The shared data folder found as the CLI finds it (edgesqueeze.paths.shared_dir:
    $EDGESQUEEZE_SHARED, else ../shared beside the working directory or the project), when it
    holds the labelled sample."""
    from edgesqueeze.paths import shared_dir

    p = shared_dir()
    return p if p is not None and (p / "imagenet" / "sample_labels.csv").is_file() else None


@pytest.fixture(scope="session")
def shared() -> Path:
    p = _shared()
    if p is None:
        pytest.skip("real data folder not found: set EDGESQUEEZE_SHARED to the shared/ folder "
                    "(weights/, imagenet/, images/) to run this test")
    return p


@pytest.fixture(scope="session")
def dc_path(shared) -> Path:
    p = shared / "weights" / "squeezenet_v1.0_deep_compression" / "compressed_SqueezeNet.net"
    if not p.is_file():
        pytest.skip(f"Deep-Compression weights not found at {p}")
    return p


@pytest.fixture(scope="session")
def dc_params(dc_path):
    from edgesqueeze.arch import squeezenet1_0_arch
    from edgesqueeze.weights.deep_compression import decode_deep_compression

    arch = squeezenet1_0_arch(caffe=True)
    return arch, decode_deep_compression(dc_path, arch)


@pytest.fixture(scope="session")
def dc_model(dc_params):
    pytest.importorskip("torch")
    from edgesqueeze.model import SqueezeNet

    return SqueezeNet.from_params(*dc_params)


@pytest.fixture(scope="session")
def dc_split(shared):
    from edgesqueeze.data import read_labels_csv, split_calibration

    return split_calibration(read_labels_csv(shared / "imagenet" / "sample_labels.csv"))


@pytest.fixture(scope="session")
def dc_quantized(dc_quantized_pair):
    """The real Deep-Compression v1.0, affine INT8 with the default options, calibrated on the
    first 32 images of the calibration split: quick, and real."""
    return dc_quantized_pair[0]


@pytest.fixture(scope="session")
def dc_quantized_pair(dc_model, dc_split, shared):
    """(dc_quantized, the float model it quantized: equalized, fire2's squeeze range-split)."""
    from edgesqueeze.data import read_class_names
    from edgesqueeze.pipeline import QuantizeOptions, calibrate_and_quantize

    labels = read_class_names(shared / "imagenet" / "synset_words.txt")
    qm, _, fp32 = calibrate_and_quantize(dc_model, dc_split[0][:32], QuantizeOptions.make(), labels=labels)
    return qm, fp32


@pytest.fixture(scope="session")
def eval_pixels(dc_split, dc_params):
    """uint8 NHWC pixels of the first 64 evaluation-split images, and their labels."""
    import numpy as np

    from edgesqueeze.data import load_image, to_uint8_input

    arch, _ = dc_params
    items = dc_split[1][:64]
    return (np.stack([to_uint8_input(load_image(i.path), arch.preprocess) for i in items]),
            np.array([i.label for i in items]))
