"""The latency cost of convs kept in float: each written INT8 file timed against the same model
all-integer (built in memory), interleaved in one run at 1 and 2 threads (the accuracy-aware
option of the main job)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

OnPass = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Latency:
    """Median ms per image (batch 1) of a written file and of the same model all-integer, timed
    interleaved in one run at `threads` threads."""

    format: str
    runtime: str
    threads: int
    mixed_ms: float
    integer_ms: float
    runs: int  # timed calls of each
    cpu: str

    @property
    def cost(self) -> float:
        """mixed / integer - 1: the float convs' share of extra time."""
        return self.mixed_ms / self.integer_ms - 1.0

    def to_dict(self) -> dict:
        return {"format": self.format, "runtime": self.runtime, "threads": self.threads,
                "mixed_ms": round(self.mixed_ms, 3), "integer_ms": round(self.integer_ms, 3),
                "cost_percent": round(100 * self.cost, 1), "runs": self.runs, "cpu": self.cpu}



def latency_cost(qm, files, onnx_target, runs: int, on_pass: OnPass | None) -> tuple[Latency, ...]:
    """Each written INT8 file against the same model all-integer (built in memory, not written),
    batch 1, at 1 and 2 threads: interleaved rounds (timing.interleaved_ms: the order rotates, so
    both see the same background load, and each block starts after a pause, so neither runs
    beside the other's still-spinning thread pool), medians."""
    from dataclasses import replace

    from .sysinfo import cpu_model

    integer = replace(qm, float_convs=(), float_weights={})
    image = np.random.default_rng(0).integers(0, 256, (1, qm.arch.input_size, qm.arch.input_size, 3), np.uint8)
    cpu = cpu_model()
    out = []
    rounds, per_round = max(1, runs // 5), min(5, runs)
    for f in files:
        if f.kind != "int8":
            continue
        for threads in (1, 2):
            if on_pass:
                on_pass(f"latency {f.path.name} ({threads} thread{'s' if threads > 1 else ''})", 0, 1)
            if f.format == "onnx":
                from .export.onnx_graph import build_int8_model
                from .export.onnx_verify import _ort, _session

                ort = _ort()
                runners = {}
                for key, src in (("mixed", f.path), ("integer", build_int8_model(integer, target=onnx_target))):
                    sess = _session(ort, src, target=onnx_target, threads=threads)
                    runners[key] = (lambda s: lambda: s.run(None, {"pixels": image}))(sess)
                runtime = f"onnxruntime {ort.__version__}"
            else:
                from .export.tflite_graph import build_tflite
                from .export.tflite_verify import _interpreter_cls, runtime_version

                interp_cls = _interpreter_cls()
                runners = {}
                for key, kw in (("mixed", {"model_path": str(f.path)}), ("integer", {"model_content": build_tflite(integer)})):
                    it = interp_cls(**kw, num_threads=threads)
                    it.allocate_tensors()
                    inp = it.get_input_details()[0]["index"]

                    def run(it=it, inp=inp):
                        it.set_tensor(inp, image)
                        it.invoke()
                    runners[key] = run
                runtime = f"ai-edge-litert {runtime_version()}"
            from .timing import interleaved_ms

            times = interleaved_ms(runners, warmup=3, rounds=rounds, per_round=per_round)
            out.append(Latency(f.format, runtime, threads, float(np.median(times["mixed"])),
                               float(np.median(times["integer"])), len(times["mixed"]), cpu))
            if on_pass:
                on_pass(f"latency {f.path.name} ({threads} thread{'s' if threads > 1 else ''})", 1, 1)
    return tuple(out)
