"""Weight formats: the Deep-Compression file (real and synthetic), caffemodel through load_params."""

import numpy as np
import pytest

from edgesqueeze.arch import caffe_names, squeezenet1_0_arch
from edgesqueeze.errors import WeightsError
from edgesqueeze.weights import load_params
from edgesqueeze.weights.deep_compression import decode_deep_compression


# ------------------------------------------------------------ the released file


@pytest.mark.shared
def test_real_file_decodes_to_the_known_model(dc_params):
    arch, params = dc_params
    assert sum(w.size + b.size for w, b in params.values()) == 1_248_424
    weights = np.concatenate([w.ravel() for w, _ in params.values()])
    assert abs((weights == 0).mean() - 0.666) < 0.001  # 66.6 % pruned (shared/README)
    dead = {n: [c for c in range(w.shape[0]) if not w[c].any()] for n, (w, _) in params.items()}
    assert {n: c for n, c in dead.items() if c} == {"fire7.expand1x1": [19]}


@pytest.mark.shared
def test_real_file_through_the_registry(shared, monkeypatch):
    monkeypatch.setenv("EDGESQUEEZE_WEIGHTS", str(shared / "weights"))
    arch, params = load_params("squeezenet1_0-dc")
    assert arch.final_pad == 1 and arch.input_size == 227 and arch.preprocess.channel_order == "BGR"
    assert params["conv10"][0].shape == (1000, 512, 1, 1)


@pytest.mark.shared
@pytest.mark.parametrize("cut", [0, 50, 104, 200_000, -1])
def test_truncated_real_file(dc_path, tmp_path, cut):
    data = dc_path.read_bytes()
    p = tmp_path / "cut.net"
    p.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    with pytest.raises(WeightsError, match="cut.net"):
        decode_deep_compression(p)


@pytest.mark.shared
def test_trailing_bytes_rejected(dc_path, tmp_path):
    p = tmp_path / "long.net"
    p.write_bytes(dc_path.read_bytes() + b"\0\0\0\0")
    with pytest.raises(WeightsError, match="left over"):
        decode_deep_compression(p)


# ------------------------------------------------------------ synthetic, no shared data


def encode_deep_compression(params, arch) -> bytes:
    """The file format from shared/README.md: counts, then per layer codebook, bias, 8-bit
    indices, 4-bit gaps (low nibble first); gaps > 15 bridged with index-0 fillers."""
    counts, body = [], []
    for c in arch.convs():
        w, b = params[c.name]
        codebook = np.unique(w)
        codebook = np.concatenate([[0.0], codebook[codebook != 0]]).astype(np.float32)
        assert codebook.size <= 256
        codebook = np.pad(codebook, (0, 256 - codebook.size))
        flat = w.ravel()
        idx_of = {float(v): i for i, v in enumerate(codebook[: np.count_nonzero(codebook) + 1])}
        entries, gaps, last = [], [], -1
        for pos in np.flatnonzero(flat):
            gap = pos - last - 1
            while gap > 15:
                entries.append(0)
                gaps.append(15)
                gap -= 16
            entries.append(idx_of[float(flat[pos])])
            gaps.append(gap)
            last = pos
        if len(gaps) % 2:
            gaps.append(0)
        g = np.array(gaps, np.uint8)
        counts.append(len(entries))
        body += [codebook.tobytes(), b.astype("<f4").tobytes(), np.array(entries, np.uint8).tobytes(),
                 (g[0::2] | (g[1::2] << 4)).astype(np.uint8).tobytes()]
    return np.array(counts, "<u4").tobytes() + b"".join(body)


def test_synthetic_file_roundtrip(tmp_path):
    arch = squeezenet1_0_arch(caffe=True)
    rng = np.random.default_rng(0)
    values = rng.standard_normal(200).astype(np.float32)
    params = {}
    for c in arch.convs():
        shape = (c.out_channels, c.in_channels, c.kernel, c.kernel)
        w = values[rng.integers(0, 200, size=shape)]
        w[rng.random(shape) < 0.7] = 0.0  # pruned, with runs longer than 15
        params[c.name] = (w, rng.standard_normal(c.out_channels).astype(np.float32))
    p = tmp_path / "synthetic.net"
    p.write_bytes(encode_deep_compression(params, arch))
    got = decode_deep_compression(p, arch)
    for name, (w, b) in params.items():
        np.testing.assert_array_equal(got[name][0], w, err_msg=name)
        np.testing.assert_array_equal(got[name][1], b, err_msg=name)


def test_wrong_files_are_named(tmp_path):
    for name, data in [("empty.net", b""), ("random.net", np.random.default_rng(1).bytes(5000)),
                       ("text.net", b"layer { name: 'conv1' }\n" * 100)]:
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(WeightsError, match=name):
            decode_deep_compression(p)
    with pytest.raises(WeightsError, match="no such file"):
        decode_deep_compression(tmp_path / "absent.net")


# ------------------------------------------------------------ caffemodel into the model


def test_caffemodel_loads_into_squeezenet1_0(tmp_path):
    from test_caffemodel import _schema, _set_blob  # the protobuf-built caffe.proto subset

    caffe = _schema(True)
    arch = squeezenet1_0_arch(caffe=True)
    rng = np.random.default_rng(2)
    net = caffe["NetParameter"](name="SqueezeNet")
    want = {}
    for c in arch.convs():
        w = rng.standard_normal((c.out_channels, c.in_channels, c.kernel, c.kernel)).astype(np.float32)
        b = rng.standard_normal(c.out_channels).astype(np.float32)
        layer = net.layer.add(name=caffe_names(arch)[c.name], type="Convolution")
        _set_blob(layer.blobs.add(), w)
        _set_blob(layer.blobs.add(), b)
        net.layer.add(name=caffe_names(arch)[c.name] + "_relu", type="ReLU")
        want[c.name] = (w, b)
    p = tmp_path / "squeezenet.caffemodel"
    p.write_bytes(net.SerializeToString())
    got_arch, got = load_params(p)
    assert got_arch.final_pad == 1
    for name, (w, b) in want.items():
        np.testing.assert_array_equal(got[name][0], w)
        np.testing.assert_array_equal(got[name][1], b)

    # drop one layer: the error names it
    del net.layer[0]
    p.write_bytes(net.SerializeToString())
    with pytest.raises(WeightsError, match="conv1"):
        load_params(p)


def test_unknown_suffix(tmp_path):
    p = tmp_path / "weights.bin"
    p.write_bytes(b"123")
    with pytest.raises(WeightsError, match="unknown weights format"):
        load_params(p)
