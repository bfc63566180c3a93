"""User errors from the CLI: one line, exit code 2, no traceback; a stdout closed early (a pipe
into `head -1`): exit code 141, nothing on stderr."""

import io
import os
import subprocess
import sys
from pathlib import Path

from edgesqueeze.cli import main
from edgesqueeze.errors import EXIT_BROKEN_PIPE, run_command

PROJECT = Path(__file__).resolve().parent.parent


def test_missing_weights_file(tmp_path, capsys):
    rc = main(["eval", "--weights", str(tmp_path / "nothing.net"), "--images", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "nothing.net" in err and "Traceback" not in err


def test_truncated_weights_file(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    bad = tmp_path / "short.net"
    bad.write_bytes(b"\x01\x00\x00\x00" * 10)
    rc = main(["eval", "--weights", str(bad), "--images", str(tmp_path / "img")])
    err = capsys.readouterr().err
    assert rc == 2 and "short.net" in err


def test_info_prints_parameter_counts(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "1248424" in out and "1235496" in out


# ---------------------------------------------------------------- missing files


def test_a_model_file_that_does_not_exist_is_not_found(tmp_path, capsys):
    for argv in (["classify", str(tmp_path / "missing.tflite"), str(tmp_path / "x.jpg")],
                 ["pack", str(tmp_path / "missing.onnx")],
                 ["info", str(tmp_path / "missing.tflite")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        name = Path(argv[1]).name
        assert f"{name}: not found" in err and "give the path of a .onnx or .tflite file" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["classify", str(tmp_path / "gone" / "m.onnx"), "x.jpg"]) == 2
    assert f"the folder {tmp_path / 'gone'} does not exist either" in capsys.readouterr().err


# ---------------------------------------------------------------- a closed stdout


def _edgesqueeze(*args: str, unbuffered: bool = False) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    env.pop("PYTHONUNBUFFERED", None)
    flags = ["-u"] if unbuffered else []
    return subprocess.Popen([sys.executable, *flags, "-m", "edgesqueeze.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=PROJECT)


def test_output_into_a_pipe_closed_before_it_is_written_exits_quietly():
    """The reader is gone before the command prints (it closes its end at once, long before the
    child has imported anything), so the write is sure to hit a closed pipe: exit code 141,
    nothing on stderr (no traceback, no 'Exception ignored ... BrokenPipeError')."""
    p = _edgesqueeze("info")
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == EXIT_BROKEN_PIPE, err
    assert err == ""


def test_info_piped_into_a_reader_that_closes_after_one_line():
    """`edgesqueeze info | head -1`: the first line arrives, the reader closes; whether the rest
    was already in the pipe or hits the closed pipe, the command ends without a word on stderr."""
    p = _edgesqueeze("info", unbuffered=True)  # a write per print: the rest can meet the closed pipe
    first = p.stdout.readline().decode()
    p.stdout.close()
    err = p.stderr.read().decode()
    rc = p.wait(timeout=120)
    assert first.startswith("| arch") and "parameters" in first
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == ""
    assert rc in (0, EXIT_BROKEN_PIPE)


def test_run_command_flushes_inside_its_handler(monkeypatch):
    """Text still in stdout's buffer is written before run_command returns, so a closed pipe
    is met inside its handler (exit 141), never at the interpreter's own flush on exit."""
    class ClosedPipe(io.StringIO):
        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert run_command("prog", lambda: print("buffered") or 0) == EXIT_BROKEN_PIPE
