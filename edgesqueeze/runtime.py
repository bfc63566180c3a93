"""Run an exported model on a board: numpy + OpenCV + one runtime, never torch.

    clf = Classifier.load("squeezenet1_0-affine-int8.tflite")   # or a .onnx file
    for c in clf.classify(frame_bgr, top_k=5):                 # pycoral-style results
        print(c.index, c.label, f"{100 * c.score:.1f} %")

Everything the runtime needs is in the file (`formats.metadata.ModelMetadata`): labels, input size,
channel order and the resize/crop. Every file takes uint8 NHWC pixels, already resized and
centre-cropped, in the model's channel order (`preprocess` converts OpenCV's BGR frames to the
file's order). Outputs, told apart by name:

    "probability"  float32 (N, classes), the softmax the file computes after its float head:
                   the scores of `classify` and `scores`, used as they are (no second softmax)
    "logits"       float32 (N, classes), the head's logits (ONNX files carry both outputs):
                   what `logits` returns, for logit SQNR and agreement tracking

A .tflite file has the "probability" output only (the one its standard metadata describes, which
MediaPipe and the Task Library read); there `logits` returns log-probabilities, log(probability):
the logits shifted by one constant per image, so top-1, agreement and the differences between
classes are those of the logits. `logits_kind` says which ("logits" | "log-probabilities");
compare two outputs through `log_probabilities` (idempotent: the log-probabilities of
log-probabilities are themselves) when the kinds may differ. A file with one output of another
name is taken as logits, and its scores are their softmax (`get_scores`).

Backends, chosen from the file: a .onnx file runs in onnxruntime (`pip install
'edgesqueeze[onnx]'`), a .tflite file in LiteRT (`ai-edge-litert`, `pip install
'edgesqueeze[tflite]'`), else in the older `tflite-runtime` (2.14, numpy < 2 only: `pip install
'edgesqueeze[legacy]'`; the order is `TFLITE_FALLBACK_ORDER`). An ONNX file
exported for the ARM target (int8 activations) is run with onnxruntime's
"session.qdqisint8allowed" = 1, so its convs are integer kernels on every CPU (see
`export.onnx.session_config`; this module does not import the writer).

A file is checked before a runtime sees it (`formats`: a flatbuffer walk for .tflite, a
protobuf walk for .onnx; a native interpreter can abort the whole process on a malformed
buffer, which Python cannot catch). Every problem with a file — not found, empty, truncated,
not a model, no edgesqueeze metadata, an input that is not the uint8 contract, a failure on its
first run — is a `ModelFileError` naming the file and the fix. `describe(path)` says what a file
holds without loading a runtime (`edgesqueeze info MODEL`).

Threads: one Classifier may be shared by several threads (a web app's request threads). LiteRT
and tflite-runtime interpreters are not re-entrant: calls into one .tflite Classifier take turns
(a lock around each `logits` call; `benchmarks/runtime_threads.py` measures its cost). An
onnxruntime session runs concurrent calls itself, so .onnx calls are not serialized.
`last_inference_ms` is per thread: each thread reads the time of its own last call.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import threading
import time
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Sequence

import numpy as np

from .data import check_frame, to_uint8_input
from .errors import DataError, EdgeSqueezeError, InferenceError, ModelFileError, OptionError, missing_extra
from .formats.bundle import read_model_file
from .formats.describe import ModelFileInfo, describe_model
from .formats.files import format_of, not_a_model, parse_metadata
from .formats.flatbuffer import FlatbufferError, read_metadata_entries
from .formats.metadata import METADATA_KEY, ModelMetadata
from .formats.onnx import ONNX_TARGET_KEY, check_onnx_scales, onnx_metadata_props
from .formats.tflite import check_tflite_bytes
from .metrics import top_k as _top_k

PROBABILITY, LOGITS = "probability", "logits"  # the output roles, by tensor name
ARM_SESSION_CONFIG = {"session.qdqisint8allowed": "1"}  # export.onnx.session_config(Target.ARM)


def describe(path: str | os.PathLike) -> ModelFileInfo:
    """What a .onnx/.tflite file (or its update bundle) says about itself — format, metadata,
    inputs/outputs, operators with counts, sizes — after the checks `Classifier.load` makes
    before it starts a runtime; no runtime is imported. ModelFileError for anything that is not
    such a model."""
    path = Path(path)
    data, bundle = read_model_file(path)
    name = bundle["name"] if bundle else path.name  # a bundle member's own suffix
    info = describe_model(data, source=str(path), name=name)
    return replace(info, path=path, file_bytes=bundle["bundle_bytes"] if bundle else len(data), bundle=bundle)


@dataclass(frozen=True)
class Class:
    """One classification result (as pycoral's `classify.Class`)."""

    index: int
    label: str
    score: float  # the class's probability

    def to_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "score": self.score}


class Backend(str, Enum):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "ai-edge-litert"
    TFLITE_RUNTIME = "tflite-runtime"


def _as_backend(backend: Backend | str | None) -> Backend | None:
    if backend is None or isinstance(backend, Backend):
        return backend
    aliases = {"onnx": Backend.ONNXRUNTIME, "ort": Backend.ONNXRUNTIME, "litert": Backend.LITERT,
               "ai_edge_litert": Backend.LITERT, "tflite_runtime": Backend.TFLITE_RUNTIME}
    key = str(backend).strip().lower()
    for b in Backend:
        if key == b.value:
            return b
    if key in aliases:
        return aliases[key]
    raise OptionError(f"backend {backend!r} is not one of: " + ", ".join(b.value for b in Backend))


# ---------------------------------------------------------------- scores


def get_scores(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float32, computed stably (max subtracted first): the scores
    of a file that outputs logits only."""
    x = np.asarray(logits, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32, copy=False)


# log(probability) of a probability that underflowed to 0: log of the smallest normal float32
_LOG_TINY = float(np.log(np.finfo(np.float32).tiny))


def log_probabilities(values: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, float32: logits -> log-probabilities, and
    log-probabilities -> themselves. Two models' outputs compared through it are comparable
    whether each gave logits or log-probabilities."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return x.astype(np.float32)
    x = x - x.max(axis=-1, keepdims=True)
    return (x - np.log(np.exp(x).sum(axis=-1, keepdims=True))).astype(np.float32)


_TINY = np.finfo(np.float32).tiny


def _log(probabilities: np.ndarray) -> np.ndarray:
    out = np.log(np.maximum(probabilities, _TINY))  # a new array: the rest works in place
    return np.maximum(out, _LOG_TINY, out=out).astype(np.float32, copy=False)


def get_classes(scores_row: np.ndarray, labels: Sequence[str], top_k: int = 5) -> list[Class]:
    """The `top_k` best classes of one row of scores, best first (ties: the lower index first,
    as `metrics.top_k`). A class without a label is named by its index."""
    row = np.asarray(scores_row)
    if row.ndim == 2 and row.shape[0] == 1:
        row = row[0]
    if row.ndim != 1:
        raise DataError(f"get_classes takes one row of scores, got shape {row.shape}")
    return _classes(row, labels, _check_top_k(top_k))


def _check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise OptionError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def _top_indices(row: np.ndarray, k: int) -> np.ndarray:
    """`metrics.top_k(row, k)[0]` (best first, ties to the lower index) without sorting the whole
    row: a partition finds the k-th best score t, the candidates are every index above t and the
    lowest-index ones equal to t, and only those k are sorted (stably, so ties stay in index
    order). A row with NaN (the partition cannot rank it) takes the full sort."""
    n = row.shape[0]
    if row.dtype.kind != "f":
        row = row.astype(np.float64)  # as metrics.top_k compares them
    if k < n:
        t = row[np.argpartition(row, n - k)[n - k:]].min()
        above = np.flatnonzero(row > t)
        cand = np.concatenate((above, np.flatnonzero(row == t)[:k - len(above)]))
        if len(cand) == k:
            return cand[np.argsort(-row[cand], kind="stable")]
    return _top_k(row, k)[0]


def _classes(row: np.ndarray, labels: Sequence[str], k: int) -> list[Class]:
    """get_classes for a checked 1-D row and a checked k."""
    idx = _top_indices(row, min(k, row.shape[0]))
    n_labels = len(labels)
    return [Class(i, str(labels[i]) if i < n_labels else str(i), s)
            for i, s in zip(idx.tolist(), row[idx].astype(np.float64).tolist())]


# ---------------------------------------------------------------- runtimes


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise missing_extra("onnxruntime", "onnx") from e
    return onnxruntime


# LiteRT first: it is maintained and runs int8 on XNNPACK; tflite-runtime 2.14 (the last
# release, numpy < 2 only) is the fallback for a board set up with the `legacy` extra.
TFLITE_FALLBACK_ORDER = (Backend.LITERT, Backend.TFLITE_RUNTIME)
TFLITE_INSTALL_HINT = ("pip install 'edgesqueeze[tflite]' (LiteRT), or on Python <= 3.11 the older runtime: "
                       "pip install 'edgesqueeze[legacy]' (tflite-runtime 2.14.0, numpy<2, OpenCV<4.12)")


def _import_tflite(backend: Backend | None):
    """(Backend, Interpreter class, version) of the first TFLite runtime that imports, in
    TFLITE_FALLBACK_ORDER (or only the one asked for). A runtime that is installed but fails to
    import (tflite-runtime under numpy 2) is named in the error with its reason."""
    broken = []
    for b in [backend] if backend is not None else TFLITE_FALLBACK_ORDER:
        top = "ai_edge_litert" if b is Backend.LITERT else "tflite_runtime"
        try:
            if b is Backend.LITERT:
                from ai_edge_litert.interpreter import Interpreter
            else:
                from tflite_runtime.interpreter import Interpreter
        except ImportError as e:
            if (e.name or "").split(".")[0] != top:  # present, but something it imports failed
                broken.append(f"{b.value} is installed but does not import ({_short(e, 200)})")
            continue
        return b, Interpreter, _dist_version(b.value)
    why = "; ".join(broken)
    if broken and int(np.__version__.split(".")[0]) >= 2:
        why += f" (numpy is {np.__version__}; tflite-runtime needs numpy<2)"
    why = f": {why}" if why else ""
    if backend is Backend.TFLITE_RUNTIME:
        raise ImportError(f"tflite_runtime cannot be used{why or ': it is not installed'}; pip install "
                          "'edgesqueeze[legacy]' (tflite-runtime 2.14.0 with numpy<2, Python <= 3.11), or use "
                          "LiteRT: pip install 'edgesqueeze[tflite]'")
    if backend is Backend.LITERT and not broken:
        raise missing_extra("ai-edge-litert", "tflite")
    tried = ", ".join(b.value for b in ([backend] if backend else TFLITE_FALLBACK_ORDER))
    raise ImportError(f"no TFLite runtime could be imported (tried {tried}){why}; " + TFLITE_INSTALL_HINT)


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _default_threads() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one (a container or
    `taskset` can allow fewer than os.cpu_count()), else os.cpu_count(). 4 on a Pi 4/5."""
    from .sysinfo import usable_cores

    return usable_cores()


def _check_threads(threads) -> int:
    if threads is None:
        return _default_threads()
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise OptionError(f"threads must be a positive integer (or None for all {_default_threads()} cores), "
                          f"got {threads!r}")
    return int(threads)


# ---------------------------------------------------------------- classifier


class Classifier:
    """One model file, ready to classify BGR frames. Make it with `Classifier.load(path)`.

    Safe to share between threads: a .tflite file's calls take turns (its interpreter is not
    re-entrant), a .onnx file's run concurrently in its onnxruntime session. For parallel
    .tflite inference give each thread its own Classifier (an interpreter each)."""

    metadata: ModelMetadata
    backend: Backend
    threads: int
    path: Path
    runtime_version: str
    outputs: tuple[str, ...]

    def __init__(self, *, path: Path, metadata: ModelMetadata, backend: Backend, threads: int,
                 runtime_version: str, run, batch_fixed: bool, num_classes: int, serialize: bool,
                 extra: dict | None = None, outputs: tuple[str, ...] = (LOGITS,)):
        self.path = path
        self.metadata = metadata
        self.backend = backend
        self.threads = threads
        self.runtime_version = runtime_version
        self.num_classes = num_classes
        self.info = dict(extra or {})  # e.g. {"target": "arm", "session_config": {...}}
        # uint8 (n, S, S, 3) -> (probabilities, logits), each float32 (n, classes) or None when the
        # file has no such output; n == 1 when batch_fixed
        self._run = run
        self.outputs = outputs  # the file's outputs by role: "probability" and/or "logits"
        self._batch_fixed = batch_fixed
        # serialize: the backend's run must not be entered by two threads at once (TFLite)
        self._run_lock = threading.Lock() if serialize else contextlib.nullcontext()
        self._per_thread = threading.local()  # each thread's own last_inference_ms
        self._has_run = False  # a run has completed: from then on a failure is not the file's

    @property
    def last_inference_ms(self) -> float:
        """The time in ms of the model runs of this thread's last `logits`/`classify` call (NaN
        before its first): each thread reads its own, so a camera loop and a web request sharing
        one Classifier do not see each other's times. It excludes the wait for another thread's
        call to finish (a shared .tflite Classifier): it is what the model took."""
        return getattr(self._per_thread, "ms", float("nan"))

    # -------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None,
             backend: Backend | str | None = None) -> "Classifier":
        """Open a .onnx or .tflite file written by edgesqueeze (format from its bytes, then its
        suffix), or its update bundle from `edgesqueeze pack` (checked, unpacked in memory;
        `info["bundle"]` then says what was in it). threads=None: every core this process may
        use (`_default_threads`). Raises ModelFileError for a file that is not a usable model,
        ImportError naming the pip command for a missing runtime, OptionError for a bad
        `threads`/`backend`."""
        path = Path(path)
        threads = _check_threads(threads)
        backend = _as_backend(backend)
        data, bundle = read_model_file(path)  # an update bundle (.esq) is unpacked in memory
        fmt = format_of(path if bundle is None else Path(f"{path}:{bundle['name']}"), data)  # member's suffix
        if fmt == "tflite":
            if backend is Backend.ONNXRUNTIME:
                raise OptionError(f"{path} is a TFLite file; backend onnxruntime runs .onnx files only")
            clf = cls._load_tflite(path, data, threads, backend)
        else:
            if backend not in (None, Backend.ONNXRUNTIME):
                raise OptionError(f"{path} is an ONNX file; backend {backend.value} runs .tflite files only")
            clf = cls._load_onnx(path, data, threads)
        if bundle is not None:
            clf.info["bundle"] = bundle
        return clf

    @classmethod
    def _load_onnx(cls, path: Path, data: bytes, threads: int) -> "Classifier":
        try:
            props = onnx_metadata_props(data)
            check_onnx_scales(data)
        except ValueError as e:
            raise not_a_model(path, data, "ONNX", str(e)) from None
        metadata = parse_metadata(path, props.get(METADATA_KEY))
        ort = _import_onnxruntime()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        target = props.get(ONNX_TARGET_KEY, "").strip().lower()
        config = dict(ARM_SESSION_CONFIG) if target == "arm" else {}
        for k, v in config.items():
            so.add_session_config_entry(k, v)
        try:
            sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise not_a_model(path, data, "ONNX", _short(e)) from None
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        s = metadata.input_size
        if len(inputs) != 1 or inputs[0].type != "tensor(uint8)" or len(inputs[0].shape) != 4 \
                or list(inputs[0].shape[1:]) != [s, s, 3]:
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise ModelFileError(f"{path}: input is {got}, not uint8 NHWC [N, {s}, {s}, 3] as its metadata says; "
                                 "re-export it with `edgesqueeze quantize`")
        names = _output_roles(path, [(o.name, o.type == "tensor(float)", o.shape) for o in outputs], batch="N")
        n_classes = int(outputs[0].shape[-1])
        _check_labels(path, metadata, n_classes)
        in_name = inputs[0].name
        batch_fixed = inputs[0].shape[0] == 1
        fetch = [n for n in (names.get(PROBABILITY), names.get(LOGITS)) if n]

        def run(pixels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
            got = dict(zip(fetch, sess.run(fetch, {in_name: pixels})))
            return got.get(names.get(PROBABILITY)), got.get(names.get(LOGITS))

        clf = cls(path=path, metadata=metadata, backend=Backend.ONNXRUNTIME, threads=threads,
                  runtime_version=ort.__version__, run=run, batch_fixed=batch_fixed, num_classes=n_classes,
                  serialize=False, extra={"target": target or None, "session_config": config},
                  outputs=tuple(k for k in (PROBABILITY, LOGITS) if k in names))
        clf._session = sess
        return clf

    @classmethod
    def _load_tflite(cls, path: Path, data: bytes, threads: int, backend: Backend | None) -> "Classifier":
        try:
            check_tflite_bytes(data)
        except FlatbufferError as e:
            raise not_a_model(path, data, "TFLite", str(e)) from None
        try:
            entries = read_metadata_entries(data)
        except FlatbufferError as e:  # pragma: no cover - check_tflite_bytes read them already
            raise not_a_model(path, data, "TFLite", str(e)) from None
        metadata = parse_metadata(path, (entries.get(METADATA_KEY) or b"").decode("utf-8", "replace") or None)
        backend, Interpreter, version = _import_tflite(backend)
        try:
            interp = Interpreter(model_content=data, num_threads=threads)
            interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001 - ValueError / RuntimeError from the interpreter
            hint = ""
            if backend is Backend.TFLITE_RUNTIME and int(np.__version__.split(".")[0]) >= 2:
                hint = (f" (tflite-runtime does not work with numpy {np.__version__}: pip install "
                        "'edgesqueeze[legacy]' pins numpy<2; or use LiteRT: pip install 'edgesqueeze[tflite]')")
            raise ModelFileError(f"{path}: {backend.value} cannot load it: {_short(e)}{hint}") from None
        ins, outs = interp.get_input_details(), interp.get_output_details()
        s = metadata.input_size
        if len(ins) != 1 or ins[0]["dtype"] != np.uint8 or list(ins[0]["shape"]) != [1, s, s, 3]:
            got = ", ".join(f"{d['name']} {np.dtype(d['dtype']).name} {[int(v) for v in d['shape']]}" for d in ins)
            raise ModelFileError(f"{path}: input is {got}, not uint8 [1, {s}, {s}, 3] as its metadata says; "
                                 "re-export it with `edgesqueeze quantize`")
        names = _output_roles(path, [(d["name"], d["dtype"] == np.float32, [int(v) for v in d["shape"]])
                                     for d in outs], batch=1)
        n_classes = int(outs[0]["shape"][-1])
        _check_labels(path, metadata, n_classes)
        in_idx = ins[0]["index"]
        index = {d["name"]: d["index"] for d in outs}
        p_idx = index[names[PROBABILITY]] if PROBABILITY in names else None
        l_idx = index[names[LOGITS]] if LOGITS in names else None

        def run(pixels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
            interp.set_tensor(in_idx, pixels)
            interp.invoke()
            return (None if p_idx is None else interp.get_tensor(p_idx).copy(),
                    None if l_idx is None else interp.get_tensor(l_idx).copy())

        clf = cls(path=path, metadata=metadata, backend=backend, threads=threads, runtime_version=version,
                  run=run, batch_fixed=True, num_classes=n_classes, serialize=True,
                  outputs=tuple(k for k in (PROBABILITY, LOGITS) if k in names))
        clf._interpreter = interp
        clf._model_bytes = data  # the interpreter reads the buffer it was given: keep it alive
        return clf

    # -------------------------------------------------------- properties

    @property
    def input_size(self) -> int:
        return self.metadata.input_size

    @property
    def labels(self) -> tuple[str, ...]:
        return self.metadata.labels

    def __repr__(self) -> str:
        return (f"Classifier({str(self.path)!r}, backend={self.backend.value} {self.runtime_version}, "
                f"threads={self.threads}, input={self.input_size}x{self.input_size} "
                f"{self.metadata.channel_order}, classes={self.num_classes}, scheme={self.metadata.scheme})")

    # -------------------------------------------------------- running

    def preprocess(self, frame_bgr: np.ndarray, *, source: str = "frame") -> np.ndarray:
        """A BGR frame (uint8 or uint16; grey, BGR or BGRA) -> the model's uint8 (S, S, 3)
        input: resized and centre-cropped as the file's metadata says, in its channel order."""
        return to_uint8_input(check_frame(frame_bgr, source=source), self.metadata.preprocess)

    @property
    def logits_kind(self) -> str:
        """What `logits` returns: "logits" (the file has a logits output) or "log-probabilities"
        (it outputs probabilities only: a .tflite file)."""
        return "logits" if LOGITS in self.outputs else "log-probabilities"

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) or (S, S, 3) pixels -> float32 (N, classes): the file's logits, or
        for a file that outputs probabilities only (.tflite) log(probability) (`logits_kind`;
        a probability that underflowed to 0 gives log of the smallest float32, -87.3).
        `last_inference_ms` (this thread's) is the time of the model runs (all N images).
        Raises ModelFileError when the file fails on its first run (it loads but cannot run:
        corrupt), InferenceError when the runtime fails on a file that has run before."""
        probs, logits = self._infer(pixels)
        return logits if logits is not None else _log(probs)

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) or (S, S, 3) pixels -> float32 probabilities (N, classes): the
        file's "probability" output as it is, or the softmax of a file that outputs logits
        only. Errors as `logits`."""
        probs, logits = self._infer(pixels)
        return probs if probs is not None else get_scores(logits)

    def _infer(self, pixels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        x = self._check_pixels(pixels)
        with self._run_lock:  # a batch on a fixed-batch file runs as one turn, not interleaved
            t0 = time.perf_counter()
            try:
                if self._batch_fixed and len(x) > 1:
                    runs = [self._run(x[i:i + 1]) for i in range(len(x))]
                    out = tuple(None if runs[0][k] is None else np.concatenate([r[k] for r in runs])
                                for k in range(2))
                else:
                    out = self._run(x)
            except MemoryError:
                raise
            except Exception as e:  # noqa: BLE001 - onnxruntime's Fail/InvalidArgument, LiteRT's RuntimeError
                raise self._run_failed(e) from None
            self._per_thread.ms = (time.perf_counter() - t0) * 1000.0
            self._has_run = True
        n = len(x)
        probs, logits = (None if o is None else np.asarray(o, dtype=np.float32).reshape(n, -1) for o in out)
        # valid files give finite outputs for every uint8 input; a finite sum proves every value
        # finite (an inf or NaN makes the sum inf or NaN), and only a non-finite sum is looked at
        for o in (probs, logits):
            if o is not None and not np.isfinite(o.sum()) and not np.isfinite(o).all():
                raise ModelFileError(f"{self.path}: the model gives non-finite outputs (NaN or inf), so a scale or "
                                     "weight in the file is corrupt; re-export it or copy it again")
        return probs, logits

    def _run_failed(self, e: Exception) -> EdgeSqueezeError:
        """The error for an exception from the backend's run. The pixels were checked, so on a
        file that has never run it is the file: a corrupt file can load and still fail here (a
        conv whose weight shape was altered, found by tests/test_hardening.py). Once a run has
        completed the file is known to work, and the failure is the runtime's."""
        if not self._has_run:
            return ModelFileError(f"{self.path}: {self.backend.value} cannot run it: {_short(e)}; the file is "
                                  "corrupt or was not written by edgesqueeze: re-export it or copy it again")
        return InferenceError(f"{self.path}: {self.backend.value} {self.runtime_version} failed while running "
                              f"the model: {_short(e)}; the same file has run in this process, so the file is not "
                              "the cause: retry, check free memory, and report it with the runtime version if it "
                              "persists")

    def classify(self, frame_bgr: np.ndarray, top_k: int = 5) -> list[Class]:
        """The top_k classes of one BGR frame, best first, with their probabilities."""
        pixels = self.preprocess(frame_bgr)
        k = _check_top_k(top_k)
        return _classes(self.scores(pixels)[0], self.labels, k)

    def classify_batch(self, frames: Sequence[np.ndarray], top_k: int = 5) -> list[list[Class]]:
        """classify() of each frame; ONNX runs them as one batch, TFLite one by one."""
        if frames is None:
            raise DataError("no frames (got None); pass a list of BGR frames")
        if isinstance(frames, np.ndarray) and frames.ndim < 4:
            raise DataError(f"classify_batch takes a list of frames (or an N x H x W x C array), got an array "
                            f"of shape {frames.shape}; use classify() for one frame")
        pixels = [self.preprocess(f, source=f"frame {i}") for i, f in enumerate(frames)]
        if not pixels:
            return []
        k = _check_top_k(top_k)
        scores = self.scores(np.stack(pixels))
        return [_classes(row, self.labels, k) for row in scores]

    def _check_pixels(self, pixels) -> np.ndarray:
        s = self.metadata.preprocess.crop
        if type(pixels) is np.ndarray and pixels.dtype == np.uint8 and pixels.shape == (s, s, 3):
            return np.ascontiguousarray(pixels[None])  # one image: the usual call
        want = f"uint8 (N, {s}, {s}, 3) or ({s}, {s}, 3) pixels in {self.metadata.channel_order} order " \
               "(Classifier.preprocess makes them from a frame)"
        if pixels is None or not isinstance(pixels, np.ndarray):
            raise DataError(f"logits takes {want}, got {type(pixels).__name__}")
        x = pixels[None] if pixels.ndim == 3 else pixels
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (s, s, 3) or len(x) == 0:
            raise DataError(f"logits takes {want}, got {pixels.dtype} {tuple(pixels.shape)}")
        return np.ascontiguousarray(x)



def _output_roles(path: Path, outputs: list[tuple[str, bool, list]], *, batch) -> dict[str, str]:
    """{role: output name} of a file's outputs (name, is float32, shape): "probability" and/or
    "logits" by name, or one output of another name taken as logits. Each must be float32
    [batch, classes], all of one class count. ModelFileError otherwise."""
    want = f"float32 [{batch}, classes]"
    bad = [f"{n} ({'float32' if f else 'not float32'} {list(sh)})" for n, f, sh in outputs
           if not f or len(sh) != 2 or not isinstance(sh[-1], int) or sh[-1] < 1]
    if not outputs or bad:
        raise ModelFileError(f"{path}: its outputs {', '.join(bad) or '(none)'} are not {want} probabilities or "
                             "logits; re-export it with `edgesqueeze quantize`")
    if len({sh[-1] for _, _, sh in outputs}) != 1:
        raise ModelFileError(f"{path}: its outputs give different class counts "
                             f"({', '.join(f'{n} {list(sh)}' for n, _, sh in outputs)}); re-export it")
    names = {n: n for n, _, _ in outputs if n in (PROBABILITY, LOGITS)}
    if not names:
        if len(outputs) != 1:
            raise ModelFileError(f"{path}: {len(outputs)} outputs, none named {PROBABILITY!r} or {LOGITS!r}; "
                                 "re-export it with `edgesqueeze quantize`")
        names = {LOGITS: outputs[0][0]}
    return names


def _check_labels(path: Path, metadata: ModelMetadata, n_classes: int) -> None:
    if metadata.labels and len(metadata.labels) != n_classes:
        raise ModelFileError(f"{path}: the model gives {n_classes} classes but its metadata has "
                             f"{len(metadata.labels)} labels; re-export it with the right class names")


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[:limit] + " ..."


__all__ = ["Backend", "Class", "Classifier", "InferenceError", "LOGITS", "ModelFileError", "ModelFileInfo", "PROBABILITY",
           "describe", "get_classes", "get_scores", "log_probabilities"]
