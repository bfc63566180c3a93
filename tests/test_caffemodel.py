"""Tests for the hand-written .caffemodel reader.

The models are written by the protobuf library itself, from a cut-down caffe.proto built in
this file (same message names and field numbers as Caffe's), so the reader is checked against
real protobuf output rather than against bytes produced by the same reasoning as the decoder.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgesqueeze.errors import WeightsError
from edgesqueeze.weights.caffe import read_caffemodel

# ---------------------------------------------------------------------------------------------
# Schema


def _schema(packed: bool) -> dict[str, type]:
    """Message classes for a subset of caffe.proto; ``packed`` sets how repeated numbers go out.

    Real Caffe declares ``data``, ``diff`` and ``double_data`` as packed and ``BlobShape.dim``
    as packed; the unpacked variant is what old models and other writers produce.
    """
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"caffe_subset_{'packed' if packed else 'unpacked'}.proto",
        package="caffe",
        syntax="proto2",
    )

    def message(name: str, *fields: tuple) -> None:
        msg = proto.message_type.add(name=name)
        for field_name, number, kind, repeated, *rest in fields:
            field = msg.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            )
            if kind == F.TYPE_MESSAGE:
                field.type_name = f".caffe.{rest[0]}"
            elif repeated and kind not in (F.TYPE_STRING, F.TYPE_BYTES):
                field.options.packed = packed

    message("BlobShape", ("dim", 1, F.TYPE_INT64, True))
    message(
        "BlobProto",
        ("shape", 7, F.TYPE_MESSAGE, False, "BlobShape"),
        ("data", 5, F.TYPE_FLOAT, True),
        ("diff", 6, F.TYPE_FLOAT, True),
        ("double_data", 8, F.TYPE_DOUBLE, True),
        ("double_diff", 9, F.TYPE_DOUBLE, True),
        ("num", 1, F.TYPE_INT32, False),
        ("channels", 2, F.TYPE_INT32, False),
        ("height", 3, F.TYPE_INT32, False),
        ("width", 4, F.TYPE_INT32, False),
    )
    message(
        "ConvolutionParameter",
        ("num_output", 1, F.TYPE_UINT32, False),
        ("kernel_size", 4, F.TYPE_UINT32, True),
    )
    message(
        "LayerParameter",
        ("name", 1, F.TYPE_STRING, False),
        ("type", 2, F.TYPE_STRING, False),
        ("bottom", 3, F.TYPE_STRING, True),
        ("top", 4, F.TYPE_STRING, True),
        ("loss_weight", 5, F.TYPE_FLOAT, True),
        ("blobs", 7, F.TYPE_MESSAGE, True, "BlobProto"),
        ("phase", 10, F.TYPE_INT32, False),
        ("convolution_param", 106, F.TYPE_MESSAGE, False, "ConvolutionParameter"),
    )
    message(
        "V1LayerParameter",
        ("bottom", 2, F.TYPE_STRING, True),
        ("top", 3, F.TYPE_STRING, True),
        ("name", 4, F.TYPE_STRING, False),
        ("type", 5, F.TYPE_INT32, False),
        ("blobs", 6, F.TYPE_MESSAGE, True, "BlobProto"),
        ("blobs_lr", 7, F.TYPE_FLOAT, True),
        ("weight_decay", 8, F.TYPE_FLOAT, True),
        ("convolution_param", 10, F.TYPE_MESSAGE, False, "ConvolutionParameter"),
    )
    message(
        "NetParameter",
        ("name", 1, F.TYPE_STRING, False),
        ("layers", 2, F.TYPE_MESSAGE, True, "V1LayerParameter"),
        ("input", 3, F.TYPE_STRING, True),
        ("input_dim", 4, F.TYPE_INT32, True),
        ("force_backward", 5, F.TYPE_BOOL, False),
        ("layer", 100, F.TYPE_MESSAGE, True, "LayerParameter"),
    )

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        msg.name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{msg.name}"))
        for msg in proto.message_type
    }


@pytest.fixture(params=[True, False], ids=["packed", "unpacked"])
def caffe(request) -> dict[str, type]:
    return _schema(request.param)


@pytest.fixture
def packed_caffe() -> dict[str, type]:
    return _schema(True)


# ---------------------------------------------------------------------------------------------
# Builders


def _f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _set_blob(blob, array: np.ndarray, *, legacy: bool = False, double: bool = False) -> None:
    if legacy:
        blob.num, blob.channels, blob.height, blob.width = array.shape
    else:
        blob.shape.dim.extend(array.shape)
    if double:
        blob.double_data.extend(array.ravel().tolist())
    else:
        blob.data.extend(array.ravel().tolist())


def _write(tmp_path, name: str, message) -> str:
    path = tmp_path / name
    path.write_bytes(message.SerializeToString())
    return path


def _net(caffe, rng: np.random.Generator):
    """A small modern net plus the arrays that its blobs must read back as."""
    expected: dict[str, list[np.ndarray]] = {}
    net = caffe["NetParameter"](name="tiny", input=["data"], input_dim=[1, 3, 8, 8])

    conv = net.layer.add(name="conv1", type="Convolution", bottom=["data"], top=["conv1"])
    conv.convolution_param.num_output = 4
    conv.convolution_param.kernel_size.append(3)
    conv.phase = 1
    weight, bias = _f32(rng, 4, 3, 3, 3), _f32(rng, 4)
    for array in (weight, bias):
        blob = conv.blobs.add()
        _set_blob(blob, array)
        blob.diff.extend(np.ones(array.size).tolist())  # gradients: present in files, ignored
    expected["conv1"] = [weight, bias]

    net.layer.add(name="relu1", type="ReLU", bottom=["conv1"], top=["conv1"])
    expected["relu1"] = []

    # Caffe's old four-field shape, as in models saved before BlobShape existed.
    legacy = _f32(rng, 1, 1, 5, 36)
    _set_blob(net.layer.add(name="fc_legacy", type="InnerProduct").blobs.add(), legacy, legacy=True)
    expected["fc_legacy"] = [legacy]

    doubles = rng.standard_normal((2, 5))  # float64: must be rounded to float32 on read
    blob = net.layer.add(name="scale_double", type="Scale").blobs.add()
    _set_blob(blob, doubles, double=True)
    blob.double_diff.extend([0.5] * doubles.size)
    expected["scale_double"] = [doubles.astype(np.float32)]

    # A one-element shape and a zero-size blob: edge cases of the shape product.
    one, empty = np.array([2.5], np.float32), np.zeros((0, 3), np.float32)
    layer = net.layer.add(name="bn", type="BatchNorm")
    _set_blob(layer.blobs.add(), one)
    _set_blob(layer.blobs.add(), empty)
    expected["bn"] = [one, empty]

    net.layer.add(name="prob", type="Softmax", loss_weight=[1.0])
    expected["prob"] = []
    return net, expected


def _assert_same(got: dict[str, list[np.ndarray]], expected: dict[str, list[np.ndarray]]) -> None:
    assert list(got) == list(expected)
    for name, blobs in expected.items():
        assert len(got[name]) == len(blobs), name
        for have, want in zip(got[name], blobs):
            assert have.dtype == np.float32
            assert have.shape == want.shape, name
            np.testing.assert_array_equal(have, want.astype(np.float32), err_msg=name)


# ---------------------------------------------------------------------------------------------
# Reading


def test_reads_modern_layers(caffe, tmp_path):
    net, expected = _net(caffe, np.random.default_rng(0))
    path = _write(tmp_path, "tiny.caffemodel", net)
    _assert_same(read_caffemodel(path), expected)
    _assert_same(read_caffemodel(str(path)), expected)


def test_unpacked_schema_really_writes_unpacked_floats(caffe):
    blob = caffe["BlobProto"](data=[1.0, 2.0])
    wire = blob.SerializeToString()
    packed = caffe["BlobShape"].DESCRIPTOR.fields_by_name["dim"].is_packed
    if packed:
        assert wire == b"\x2a\x08" + np.array([1, 2], "<f4").tobytes()
    else:
        assert wire == b"\x2d" + np.float32(1).tobytes() + b"\x2d" + np.float32(2).tobytes()


def test_reads_legacy_v1_layers(caffe, tmp_path):
    rng = np.random.default_rng(1)
    net = caffe["NetParameter"](name="old")
    weight, bias = _f32(rng, 8, 3, 1, 1), _f32(rng, 1, 1, 1, 8)
    conv = net.layers.add(name="conv", type=4, bottom=["data"], top=["conv"])
    conv.blobs_lr.extend([1.0, 2.0])
    conv.weight_decay.extend([1.0, 0.0])
    conv.convolution_param.num_output = 8
    _set_blob(conv.blobs.add(), weight, legacy=True)
    _set_blob(conv.blobs.add(), bias, legacy=True)
    net.layers.add(name="relu", type=18)
    fc = _f32(rng, 10, 8)
    _set_blob(net.layers.add(name="fc", type=14).blobs.add(), fc)

    path = _write(tmp_path, "old.caffemodel", net)
    _assert_same(read_caffemodel(path), {"conv": [weight, bias], "relu": [], "fc": [fc]})


def test_returned_arrays_are_independent_and_writable(packed_caffe, tmp_path):
    net, _ = _net(packed_caffe, np.random.default_rng(2))
    path = _write(tmp_path, "tiny.caffemodel", net)
    first = read_caffemodel(path)
    weight = first["conv1"][0]
    assert weight.flags.writeable and weight.flags.c_contiguous
    weight[...] = 0
    assert read_caffemodel(path)["conv1"][0].any()


def test_name_after_blobs_and_split_packed_data(packed_caffe, tmp_path):
    # Protobuf allows fields in any order and a packed field in several pieces, which merge.
    caffe = packed_caffe
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    pieces = [
        caffe["BlobProto"](data=values.ravel()[:5].tolist()),
        caffe["BlobProto"](data=values.ravel()[5:].tolist()),
        caffe["BlobProto"](shape=caffe["BlobShape"](dim=[3])),
        caffe["BlobProto"](shape=caffe["BlobShape"](dim=[4])),
    ]
    layer = caffe["LayerParameter"]()
    layer.blobs.add().MergeFromString(b"".join(piece.SerializeToString() for piece in pieces))
    named_last = caffe["LayerParameter"](name="late")
    layer_bytes = layer.SerializeToString() + named_last.SerializeToString()
    net = caffe["NetParameter"]()
    net.layer.add().MergeFromString(layer_bytes)
    path = _write(tmp_path, "order.caffemodel", net)
    _assert_same(read_caffemodel(path), {"late": [values]})


def _raw_unknown_fields() -> bytes:
    """Fields of every wire type with numbers the reader does not know, as raw wire bytes."""
    varint = bytes([(900 << 3 | 0) & 0x7F | 0x80, 900 >> 4]) + b"\xff\xff\xff\xff\x0f"
    fixed64 = bytes([(901 << 3 | 1) & 0x7F | 0x80, 901 >> 4]) + b"\x01" * 8
    length = bytes([(902 << 3 | 2) & 0x7F | 0x80, 902 >> 4, 3]) + b"abc"
    fixed32 = bytes([(903 << 3 | 5) & 0x7F | 0x80, 903 >> 4]) + b"\x02" * 4
    # A group with a nested group and a field inside, closed by matching end-group tags.
    group = (
        bytes([(904 << 3 | 3) & 0x7F | 0x80, 904 >> 4])
        + bytes([(5 << 3) | 3])
        + bytes([(1 << 3) | 0, 7])
        + bytes([(5 << 3) | 4])
        + bytes([(904 << 3 | 4) & 0x7F | 0x80, 904 >> 4])
    )
    return varint + fixed64 + length + fixed32 + group


def test_skips_unknown_fields_of_every_wire_type(packed_caffe, tmp_path):
    caffe = packed_caffe
    values = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    unknown = _raw_unknown_fields()
    blob = caffe["BlobProto"]()
    blob.MergeFromString(unknown)
    _set_blob(blob, values)
    blob.MergeFromString(unknown)
    layer = caffe["LayerParameter"](name="ip")
    layer.MergeFromString(unknown)
    layer.blobs.append(blob)
    net = caffe["NetParameter"]()
    net.MergeFromString(unknown)
    net.layer.append(layer)
    data = net.SerializeToString()
    assert data.count(unknown) == 4  # protobuf kept the unknown fields, so the test means something
    path = tmp_path / "unknown.caffemodel"
    path.write_bytes(data)
    _assert_same(read_caffemodel(path), {"ip": [values]})


def _len_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field with a one- or two-byte tag and a one-byte length."""
    key = number << 3 | 2
    tag = bytes([key]) if key < 0x80 else bytes([key & 0x7F | 0x80, key >> 7])
    assert len(payload) < 0x80
    return tag + bytes([len(payload)]) + payload


def test_unpacked_floats_with_overlong_tags(tmp_path):
    # Protobuf writers always use the shortest tag, so these bytes are built by hand: a tag
    # padded to two bytes is still legal and must not upset the fast path for unpacked runs.
    short = b"\x2d" + np.float32(1.5).tobytes() + b"\x2d" + np.float32(-2).tobytes()
    overlong = b"\xad\x00" + np.float32(3).tobytes()
    blob = _len_field(7, b"\x08\x03") + short + overlong
    layer = _len_field(1, b"ip") + _len_field(7, blob)
    path = tmp_path / "overlong.caffemodel"
    path.write_bytes(_len_field(100, layer))
    _assert_same(read_caffemodel(path), {"ip": [np.array([1.5, -2, 3], np.float32)]})


def test_five_megabyte_model_is_fast(caffe, tmp_path):
    rng = np.random.default_rng(3)
    net = caffe["NetParameter"](name="big")
    expected = {}
    for index in range(5):
        weight = _f32(rng, 128, 256, 3, 3)  # 1.18 MB each, 5.9 MB in all
        _set_blob(net.layer.add(name=f"conv{index}").blobs.add(), weight)
        expected[f"conv{index}"] = [weight]
    path = _write(tmp_path, "big.caffemodel", net)
    assert path.stat().st_size > 5_000_000
    start = time.perf_counter()
    got = read_caffemodel(path)
    elapsed = time.perf_counter() - start
    _assert_same(got, expected)
    assert elapsed < 1.0, f"parsing a {path.stat().st_size} byte model took {elapsed:.2f} s"


# ---------------------------------------------------------------------------------------------
# Errors


def _error(path) -> str:
    with pytest.raises(WeightsError) as info:
        read_caffemodel(path)
    message = str(info.value)
    assert str(path) in message
    return message


@pytest.fixture
def model_bytes(packed_caffe) -> bytes:
    net, _ = _net(packed_caffe, np.random.default_rng(4))
    return net.SerializeToString()


def test_missing_file(tmp_path):
    assert "not found" in _error(tmp_path / "absent.caffemodel")


def test_directory(tmp_path):
    assert "directory" in _error(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(b"")
    assert "empty" in _error(path)


def test_truncated_file(model_bytes, tmp_path):
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(model_bytes[: len(model_bytes) // 2])
    message = _error(path)
    assert "runs past the end of the file" in message and "truncated" in message


def test_truncated_inside_a_varint(tmp_path):
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(b"\xa2\x06\x80")  # layer tag, then a length varint that never ends
    assert "varint" in _error(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.caffemodel"
    path.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    _error(path)


def test_jpeg(tmp_path):
    path = tmp_path / "cat.jpg"
    header = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    path.write_bytes(header + bytes(200))
    assert "not a Caffe NetParameter" in _error(path)


def test_prototxt_instead_of_caffemodel(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text('name: "SqueezeNet"\nlayer {\n  name: "data"\n  type: "Input"\n}\n')
    assert "prototxt" in _error(path)


def test_wrong_wire_type_for_layer(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(b"\xa0\x06\x01")  # field 100 as a varint
    assert "NetParameter.layer" in _error(path)


def test_net_without_weights(packed_caffe, tmp_path):
    net = packed_caffe["NetParameter"](name="deploy")
    net.layer.add(name="relu", type="ReLU")
    path = _write(tmp_path, "deploy.caffemodel", net)
    assert "no weights" in _error(path)


def test_data_does_not_fill_shape(packed_caffe, tmp_path):
    net = packed_caffe["NetParameter"]()
    blob = net.layer.add(name="conv1").blobs.add()
    blob.shape.dim.extend([4, 3, 3, 3])
    blob.data.extend([0.0] * 100)
    message = _error(_write(tmp_path, "short.caffemodel", net))
    for part in ("conv1", "(4, 3, 3, 3)", "108", "100"):
        assert part in message


def test_legacy_shape_mismatch(packed_caffe, tmp_path):
    net = packed_caffe["NetParameter"]()
    net.layer.add(name="fc").blobs.add(num=1, channels=1, height=2, width=3, data=[1.0] * 5)
    assert "(1, 1, 2, 3)" in _error(_write(tmp_path, "short.caffemodel", net))


def test_negative_dimension(packed_caffe, tmp_path):
    net = packed_caffe["NetParameter"]()
    shape = packed_caffe["BlobShape"](dim=[-1, 2])
    net.layer.add(name="fc").blobs.add(shape=shape, data=[1.0, 2.0])
    assert "negative" in _error(_write(tmp_path, "neg.caffemodel", net))


def test_duplicate_layer_name(packed_caffe, tmp_path):
    net = packed_caffe["NetParameter"]()
    for _ in range(2):
        blob = net.layer.add(name="conv1").blobs.add(data=[1.0])
        blob.shape.dim.append(1)
    assert "'conv1' appears more than once" in _error(_write(tmp_path, "dup.caffemodel", net))


def test_nameless_layer_with_weights(packed_caffe, tmp_path):
    net = packed_caffe["NetParameter"]()
    net.layer.add().blobs.add(shape=packed_caffe["BlobShape"](dim=[1]), data=[1.0])
    assert "no name" in _error(_write(tmp_path, "anon.caffemodel", net))


def test_every_truncation_is_a_weights_error_or_a_shorter_net(model_bytes, tmp_path):
    # A cut on a layer boundary leaves a valid, shorter message (protobuf has no overall length),
    # so some cuts read fine; every other cut must give a WeightsError and nothing else.
    path = tmp_path / "cut.caffemodel"
    errors = 0
    for size in range(1, len(model_bytes)):
        path.write_bytes(model_bytes[:size])
        try:
            read_caffemodel(path)
        except WeightsError as error:
            assert str(path) in str(error)
            errors += 1
    assert errors > len(model_bytes) * 0.9


def test_corrupted_bytes_never_escape_as_other_errors(model_bytes, tmp_path):
    rng = np.random.default_rng(6)
    path = tmp_path / "flipped.caffemodel"
    for _ in range(500):
        data = bytearray(model_bytes)
        for where in rng.integers(0, len(data), rng.integers(1, 4)):
            data[where] = int(rng.integers(0, 256))
        path.write_bytes(bytes(data))
        try:
            read_caffemodel(path)
        except WeightsError:
            pass
    for seed in range(300):
        path.write_bytes(np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8).tobytes())
        with pytest.raises(WeightsError):
            read_caffemodel(path)
