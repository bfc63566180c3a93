"""Shared fixtures. Real data is read from $EDGESQUEEZE_SHARED (set by .ci/run), else from
../shared beside the project; tests that need it are skipped with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent


def _shared() -> Path | None:
    env = os.environ.get("EDGESQUEEZE_SHARED")
    p = Path(env) if env else PROJECT.parent / "shared"
    return p if (p / "imagenet" / "sample_labels.csv").is_file() else None


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
