"""Mutants of model files, and the child process that loads them (tests/test_hardening.py).

A mutant is a small JSON-able spec ({"kind": ..., parameters}) applied to the bytes of a real
file, so the parent and the worker agree on every mutant without writing hundreds of copies,
and a crashing one can be rebuilt for a bug report (`apply`).

Where the mutations go: truncations are spread over the whole file (the header and the tail
included), bit flips anywhere and in the structure region, and byte overwrites aimed at the
structure a loader follows — flatbuffer vtables, table offsets, vector lengths and indices
(TFLite), protobuf keys, length prefixes and varints (ONNX) — not only at weight data, which a
loader does not interpret; and special values (inf, NaN, 0, negative) or exponent/sign flips
in float32 scales and constants, where a loadable file can give NaN. The structure maps are found with small walkers written here, not
with the project's own readers (which are what is under test).

Run as a script it is the worker: `python model_mutants.py JOB.json START` loads mutants
START.. in sequence (Classifier.load + one classify of a fixed frame) and writes one JSON line
per mutant, flushed, so the parent knows which mutant was running when the process died.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesqueeze.formats.onnx import varint as _varint

PROJECT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- structure maps


@dataclass
class StructureMap:
    """Where a file's structure lies: `data` are the (start, end) ranges of weight payloads;
    `spots` are (position, width, what) of fields a loader follows; `floats` the (start, end)
    ranges of float32 scales and constants (where one flipped bit can make a model give NaN)."""

    size: int
    data: list[tuple[int, int]] = field(default_factory=list)
    spots: list[tuple[int, int, str]] = field(default_factory=list)
    floats: list[tuple[int, int]] = field(default_factory=list)

    def in_data(self, pos: int) -> bool:
        return any(a <= pos < b for a, b in self.data)

    def structure_positions(self) -> np.ndarray:
        mask = np.ones(self.size, bool)
        for a, b in self.data:
            mask[a:b] = False
        return np.flatnonzero(mask)


def tflite_structure(buf: bytes) -> StructureMap:
    """Walk Model -> operator codes, subgraphs (tensors, quantization, operators), buffers,
    metadata (schema.fbs field numbers) and record every vtable, table offset, vector length,
    index and scalar; the payloads of buffers that tensors use are the data region."""
    m = StructureMap(len(buf))
    u32 = lambda p: struct.unpack_from("<I", buf, p)[0]  # noqa: E731
    i32 = lambda p: struct.unpack_from("<i", buf, p)[0]  # noqa: E731
    u16 = lambda p: struct.unpack_from("<H", buf, p)[0]  # noqa: E731

    def table(t: int, what: str) -> int:
        m.spots.append((t, 4, f"{what}.soffset"))
        vt = t - i32(t)
        vsize = u16(vt)
        for k in range(0, vsize, 2):
            m.spots.append((vt + k, 2, f"{what}.vtable"))
        return t

    def fpos(t: int, i: int) -> int | None:
        vt = t - i32(t)
        if 4 + 2 * i + 2 > u16(vt):
            return None
        rel = u16(vt + 4 + 2 * i)
        return t + rel if rel else None

    def scalar(t: int, i: int, width: int, what: str) -> None:
        p = fpos(t, i)
        if p is not None:
            m.spots.append((p, width, what))

    def sub(t: int, i: int, what: str) -> int | None:
        p = fpos(t, i)
        if p is None:
            return None
        m.spots.append((p, 4, f"{what}.uoffset"))
        return table(p + u32(p), what)

    def vec(t: int, i: int, what: str, elem: int = 0) -> tuple[int, int]:
        p = fpos(t, i)
        if p is None:
            return 0, 0
        m.spots.append((p, 4, f"{what}.uoffset"))
        v = p + u32(p)
        m.spots.append((v, 4, f"{what}.length"))
        n = u32(v)
        for k in range(n if elem else 0):
            m.spots.append((v + 4 + elem * k, elem, f"{what}.element"))
        return v + 4, n

    def tables(t: int, i: int, what: str) -> list[int]:
        start, n = vec(t, i, what)
        out = []
        for k in range(n):
            m.spots.append((start + 4 * k, 4, f"{what}.uoffset"))
            out.append(table(start + 4 * k + u32(start + 4 * k), what))
        return out

    model = table(u32(0), "model")
    m.spots.append((0, 4, "root.uoffset"))
    m.spots.append((4, 4, "file_identifier"))
    scalar(model, 0, 4, "model.version")
    for oc in tables(model, 1, "opcode"):
        scalar(oc, 0, 1, "opcode.deprecated_builtin_code")
        scalar(oc, 2, 4, "opcode.version")
        scalar(oc, 3, 4, "opcode.builtin_code")
    used, float_buffers = set(), set()
    for sg in tables(model, 2, "subgraph"):
        for t in tables(sg, 0, "tensor"):
            vec(t, 0, "tensor.shape", 4)
            scalar(t, 1, 1, "tensor.type")
            scalar(t, 2, 4, "tensor.buffer")
            p, tp = fpos(t, 2), fpos(t, 1)
            if p is not None:
                used.add(u32(p))
                if tp is None or buf[tp] == 0:  # FLOAT32 (the default type)
                    float_buffers.add(u32(p))
            vec(t, 3, "tensor.name")
            q = sub(t, 4, "quantization")
            if q is not None:
                start, n = vec(q, 2, "quantization.scale", 4)
                if n:
                    m.floats.append((start, start + 4 * n))
                vec(q, 3, "quantization.zero_point", 8)
                scalar(q, 6, 4, "quantization.quantized_dimension")
        vec(sg, 1, "subgraph.inputs", 4)
        vec(sg, 2, "subgraph.outputs", 4)
        for op in tables(sg, 3, "operator"):
            scalar(op, 0, 4, "operator.opcode_index")
            vec(op, 1, "operator.inputs", 4)
            vec(op, 2, "operator.outputs", 4)
            scalar(op, 3, 1, "operator.builtin_options_type")
            opts = sub(op, 4, "builtin_options")
            if opts is not None:  # every options table here holds only scalars: record them all
                vt = opts - i32(opts)
                for k in range((u16(vt) - 4) // 2):
                    scalar(opts, k, 1, "builtin_options.field")
    for k, b in enumerate(tables(model, 4, "buffer")):
        p = fpos(b, 0)
        if p is None:
            continue
        m.spots.append((p, 4, "buffer.uoffset"))
        v = p + u32(p)
        m.spots.append((v, 4, "buffer.length"))
        if k in used and u32(v):
            m.data.append((v + 4, v + 4 + u32(v)))
            if k in float_buffers:
                m.floats.append((v + 4, v + 4 + u32(v)))
    for md in tables(model, 6, "metadata"):
        vec(md, 0, "metadata.name")
        scalar(md, 1, 4, "metadata.buffer")
    return m


# onnx.proto: for each message, {field number: sub-message name, or "data" for weight payloads}
_ONNX_SCHEMA = {
    "ModelProto": {7: "GraphProto", 8: "OperatorSetIdProto", 14: "StringStringEntryProto"},
    "GraphProto": {1: "NodeProto", 5: "TensorProto", 11: "ValueInfoProto", 12: "ValueInfoProto",
                   13: "ValueInfoProto"},
    "NodeProto": {5: "AttributeProto"},
    "AttributeProto": {5: "TensorProto", 6: "GraphProto"},
    "TensorProto": {4: "data", 5: "data", 7: "data", 9: "data", 10: "data", 11: "data"},
    "ValueInfoProto": {2: "TypeProto"},
    "TypeProto": {1: "TypeProto.Tensor"},
    "TypeProto.Tensor": {2: "TensorShapeProto"},
    "TensorShapeProto": {1: "Dimension"},
    "Dimension": {},
    "OperatorSetIdProto": {},
    "StringStringEntryProto": {},
}


def onnx_structure(buf: bytes) -> StructureMap:
    """Walk the protobuf messages of a ModelProto (the fields edgesqueeze's files use) and
    record every key, length prefix and varint value; tensor payloads are the data region."""
    m = StructureMap(len(buf))

    def walk(start: int, end: int, msg: str) -> None:
        pos = start
        schema = _ONNX_SCHEMA.get(msg, {})
        data_type, payload = None, []
        while pos < end:
            key_pos = pos
            key, pos = _varint(buf, pos)
            m.spots.append((key_pos, pos - key_pos, f"{msg}.key"))
            field_no, wire = key >> 3, key & 7
            if wire == 0:
                v0 = pos
                value, pos = _varint(buf, pos)
                m.spots.append((v0, pos - v0, f"{msg}.varint"))
                if msg == "TensorProto" and field_no == 2:
                    data_type = value
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                l0 = pos
                length, pos = _varint(buf, pos)
                m.spots.append((l0, pos - l0, f"{msg}.length"))
                inner = schema.get(field_no)
                if inner == "data":
                    m.data.append((pos, pos + length))
                    payload.append((pos, pos + length))
                elif inner is not None:
                    walk(pos, pos + length, inner)
                pos += length
            else:
                raise ValueError(f"wire type {wire} at {key_pos}")
        if data_type == 1:  # TensorProto.FLOAT: in an INT8 QDQ file, the scales
            m.floats += payload

    walk(0, len(buf), "ModelProto")
    return m


def structure_of(buf: bytes, fmt: str) -> StructureMap:
    return tflite_structure(buf) if fmt == "tflite" else onnx_structure(buf)


# ---------------------------------------------------------------- mutants


KINDS = ("zero-length", "truncate", "random-bytes", "bit-flip", "multi-bit-flip", "float-overwrite",
         "struct-overwrite")
# float32 values a corrupt scale or constant may hold: +-inf, NaN, 0, negative, huge, denormal
_SPECIAL_F32 = (0x7F800000, 0xFF800000, 0x7FC00000, 0x00000000, 0xBF800000, 0x7F7FFFFF, 0x00000001)
_SPECIAL_U32 = (0, 1, 2, 3, 4, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE)
_SPECIAL_U16 = (0, 1, 2, 3, 4, 0xFF, 0x7FFF, 0x8000, 0xFFFF)


def make_specs(buf: bytes, fmt: str, n: int, seed: int) -> list[dict]:
    """`n` mutant specs of `buf` (fixed by `seed`); every kind of KINDS is present."""
    rng = np.random.default_rng(seed)
    sm = structure_of(buf, fmt)
    size = len(buf)
    struct_pos = sm.structure_positions()
    spots = sm.spots
    specs: list[dict] = [{"kind": "zero-length"}]

    # truncations: the header, the tail, and spread over the file (linear and log scale)
    head = [1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 24, 32, 48, 64, 100]
    tail = [size - d for d in (1, 2, 3, 4, 5, 8, 16, 64, 256) if size - d > 0]
    n_trunc = max(len(head) + len(tail) + 10, n * 12 // 100)
    spread = n_trunc - len(head) - len(tail)
    lin = rng.integers(1, size, spread // 2)
    log = np.exp(rng.uniform(np.log(100), np.log(size - 1), spread - spread // 2)).astype(int)
    for at in head + tail + lin.tolist() + log.tolist():
        specs.append({"kind": "truncate", "at": int(at)})

    # random bytes of several sizes; half of them keep the real first bytes (for TFLite the
    # 'TFL3' identifier, so the flatbuffer walker has to look further)
    for s in (1, 4, 7, 8, 9, 16, 64, 512, 4096, 65536, size):
        for keep in (0, 8 if fmt == "tflite" else 2):
            if keep < s:
                specs.append({"kind": "random-bytes", "size": int(s), "keep": keep, "seed": int(rng.integers(2**31))})

    rest = n - len(specs)
    n_flip, n_multi, n_float = rest * 22 // 100, rest * 14 // 100, rest * 6 // 100
    floats = np.concatenate([np.arange(a, b, 4) for a, b in sm.floats])
    for k in range(n_float):  # a scale or float constant: a special value, or its exponent/sign bit flipped
        pos = int(rng.choice(floats))
        old = struct.unpack_from("<I", buf, pos)[0]
        v = int(rng.choice(_SPECIAL_F32)) if k % 2 else old ^ (1 << int(rng.choice([30, 31, 29])))
        specs.append({"kind": "float-overwrite", "at": pos, "hex": struct.pack("<I", v).hex()})
    for k in range(n_flip):  # single bits: half anywhere, half in the structure region
        pos = int(rng.integers(size)) if k % 2 else int(rng.choice(struct_pos))
        specs.append({"kind": "bit-flip", "bits": [pos * 8 + int(rng.integers(8))],
                      "region": "any" if k % 2 else "structure"})
    for k in range(n_multi):
        count = int(rng.choice([2, 3, 4, 8, 16, 64]))
        pool = struct_pos if k % 2 == 0 else np.arange(size)
        pos = rng.choice(pool, count)
        specs.append({"kind": "multi-bit-flip", "bits": [int(p) * 8 + int(rng.integers(8)) for p in pos],
                      "region": "structure" if k % 2 == 0 else "any"})
    while len(specs) < n:  # overwrites aimed at the fields a loader follows
        if rng.random() < 0.15:  # any structure byte, random value
            pos = int(rng.choice(struct_pos))
            specs.append({"kind": "struct-overwrite", "at": pos, "hex": bytes([int(rng.integers(256))]).hex(),
                          "what": "structure-byte"})
            continue
        pos, width, what = spots[int(rng.integers(len(spots)))]
        specs.append({"kind": "struct-overwrite", "at": int(pos), "hex": _field_value(rng, buf, pos, width, fmt).hex(),
                      "what": what})
    return specs[:n]


def _field_value(rng, buf: bytes, pos: int, width: int, fmt: str) -> bytes:
    old = buf[pos:pos + width]
    if fmt == "onnx":  # keys and varints: another wire type / field, or a different varint of the same length
        r = rng.random()
        if r < 0.3:
            return bytes([old[0] ^ int(rng.integers(1, 8))]) + old[1:]  # the wire type (or a continuation)
        if r < 0.5:
            return bytes([old[0] ^ (1 << int(rng.integers(3, 8)))]) + old[1:]  # the field number
        if r < 0.7:
            v = bytearray(old)
            v[0] = (v[0] & 0x80) | int(rng.choice([0, 1, 0x7F, int(rng.integers(128))]))
            return bytes(v)
        v = bytearray(old)
        v[-1] = int(rng.integers(0, 128)) if len(v) > 1 else int(rng.integers(256))
        return bytes(v)
    if width == 4:
        r = rng.random()
        if r < 0.5:
            v = int(rng.choice(_SPECIAL_U32))
        elif r < 0.75:
            v = (struct.unpack("<I", old)[0] + int(rng.choice([-8, -4, -2, -1, 1, 2, 4, 8, 4096]))) % 2**32
        else:
            v = int(rng.integers(2**32))
        return struct.pack("<I", v)
    if width == 2:
        r = rng.random()
        if r < 0.5:
            v = int(rng.choice(_SPECIAL_U16))
        elif r < 0.8:
            v = (struct.unpack("<H", old)[0] + int(rng.choice([-4, -2, 2, 4, 8]))) % 2**16
        else:
            v = int(rng.integers(2**16))
        return struct.pack("<H", v)
    return bytes(int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256))])) for _ in range(width))


def apply(spec: dict, buf: bytes) -> bytes:
    kind = spec["kind"]
    if kind == "control":  # the file itself: shows the harness can load a good file
        return buf
    if kind == "zero-length":
        return b""
    if kind == "truncate":
        return buf[:spec["at"]]
    if kind == "random-bytes":
        body = np.random.default_rng(spec["seed"]).integers(0, 256, spec["size"], dtype=np.uint8).tobytes()
        return buf[:spec["keep"]] + body[spec["keep"]:]
    if kind in ("bit-flip", "multi-bit-flip"):
        b = bytearray(buf)
        for bit in spec["bits"]:
            b[bit // 8] ^= 1 << (bit % 8)
        return bytes(b)
    if kind in ("struct-overwrite", "float-overwrite"):
        b = bytearray(buf)
        new = bytes.fromhex(spec["hex"])
        b[spec["at"]:spec["at"] + len(new)] = new
        return bytes(b)
    raise ValueError(f"unknown mutant kind {kind!r}")


# ---------------------------------------------------------------- parent side


@dataclass
class Outcome:
    i: int
    status: str  # "ok" | "error" | "crash" | "hang"
    detail: dict


def run_campaign(job: dict, job_path: Path, *, hang_s: float = 60.0) -> list[Outcome]:
    """Run the worker over job["specs"]; a worker that dies (or is silent for `hang_s`) costs
    the mutant it was loading a "crash" ("hang") and is restarted at the next one."""
    job_path.write_text(json.dumps(job))
    n = len(job["specs"])
    results: dict[int, Outcome] = {}
    start = 0
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), *filter(None, [env.get("PYTHONPATH")])])
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    while start < n:
        proc = subprocess.Popen([sys.executable, __file__, str(job_path), str(start)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT)
        lines: queue.Queue = queue.Queue()
        err_tail: list[str] = []
        threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)], daemon=True).start()
        threading.Thread(target=lambda: [err_tail.append(ln) for ln in proc.stderr], daemon=True).start()
        current, hung, ready = start, False, False
        while True:
            try:
                ln = lines.get(timeout=hang_s)
            except queue.Empty:
                proc.kill()
                hung = True
                break
            if ln is None:
                break
            if not ln.startswith("{"):
                continue
            doc = json.loads(ln)
            if doc.get("ready"):
                ready = True
                continue
            if doc.get("done"):
                continue
            results[doc["i"]] = Outcome(doc["i"], doc["status"], doc | {"spec": job["specs"][doc["i"]]})
            current = doc["i"] + 1
        rc = proc.wait()
        if current >= n:  # every mutant has its outcome
            break
        if not ready:  # the harness itself is broken (an import failed): not a mutant's doing
            raise RuntimeError(f"the mutant worker did not start (rc {rc}): {''.join(err_tail)[-1500:]}")
        detail = {"rc": rc, "stderr": "".join(err_tail)[-1500:], "spec": job["specs"][current]}
        results[current] = Outcome(current, "hang" if hung else "crash", detail)
        start = current + 1
    return [results[i] for i in sorted(results)]


# ---------------------------------------------------------------- worker side


def _worker(job_path: str, start: int) -> None:
    import traceback
    import warnings

    warnings.simplefilter("ignore")
    from edgesqueeze.errors import EdgeSqueezeError
    from edgesqueeze.runtime import Classifier

    job = json.loads(Path(job_path).read_text())
    src = Path(job["source"]).read_bytes()
    out_dir = Path(job["dir"])
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    print(json.dumps({"ready": True}), flush=True)
    for i in range(start, len(job["specs"])):
        path = out_dir / f"mutant-{i:04d}{job['suffix']}"
        path.write_bytes(apply(job["specs"][i], src))
        try:
            clf = Classifier.load(path, threads=1)
            logits = clf.logits(clf.preprocess(frame))
            clf.classify(frame, top_k=1)
            doc = {"i": i, "status": "ok", "shape": list(logits.shape),
                   "finite": bool(np.isfinite(logits).all())}
        except Exception as e:  # noqa: BLE001 - every outcome is recorded; the parent judges it
            doc = {"i": i, "status": "error", "type": type(e).__name__,
                   "project_error": isinstance(e, EdgeSqueezeError), "message": str(e)[:600]}
            if not doc["project_error"]:  # where it came from, for the bug report
                doc["traceback"] = traceback.format_exc()[-1500:]
        finally:
            path.unlink(missing_ok=True)
        print(json.dumps(doc), flush=True)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]))
