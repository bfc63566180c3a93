"""The benchmark scripts' interleaved timing loop: edgesqueeze.timing (the main job uses it too)."""

from edgesqueeze.timing import interleaved_ms  # noqa: F401

__all__ = ["interleaved_ms"]
