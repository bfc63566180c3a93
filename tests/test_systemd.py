"""The systemd unit of the camera demo: `edgesqueeze camera --print-systemd-unit`,
`--install-systemd-unit PATH` and the example demos/edgesqueeze-camera.service."""

from __future__ import annotations

import argparse
import configparser
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgesqueeze import camera as C
from edgesqueeze.cli import camera as CLI
from edgesqueeze.cli import main
from edgesqueeze.errors import DataError, EdgeSqueezeError, OptionError
from edgesqueeze.runtime import ModelFileError

TEMPLATE = Path(__file__).resolve().parents[1] / "demos" / "edgesqueeze-camera.service"


def fake_tflite(path: Path) -> Path:
    """Bytes that the model-file check takes for a TFLite file (the 'TFL3' identifier at 4..8);
    the unit is built without loading a runtime, so nothing else is read."""
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    return path


def parse_args(argv: list[str]) -> argparse.Namespace:
    return CLI.configure_parser(argparse.ArgumentParser()).parse_args(argv)


def read_unit(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=True, interpolation=None, comment_prefixes=("#", ";"))
    cp.optionxform = str  # systemd keys are case-sensitive
    cp.read_string(text)
    return cp


def exec_argv(exec_start: str) -> list[str]:
    """ExecStart= back to argv: systemd's %% and $$ escapes, then its quoting (for the double
    quotes with \\ and \" that systemd_quote writes, the same as the shell's)."""
    return shlex.split(exec_start.replace("%%", "%").replace("$$", "$"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_tflite(tmp_path / "int8.tflite")
    fake_tflite(tmp_path / "fp32.tflite")
    (tmp_path / "frames").mkdir()
    return tmp_path


def test_unit_runs_the_same_command_with_absolute_paths(workdir):
    args = parse_args(["--model", "int8.tflite", "--source", "frames", "--loop", "--fp32", "fp32.tflite",
                       "--shadow-every", "5", "--threads", "3", "--max-reconnects", "-1", "--capture", "thread"])
    unit = read_unit(CLI.systemd_unit(args, user="root"))
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure" and int(svc["RestartSec"]) > 0
    assert svc["StandardOutput"] == "journal" and svc["StandardError"] == "journal"
    assert svc["Environment"] == "PYTHONUNBUFFERED=1" and svc["User"] == "root"
    assert Path(svc["WorkingDirectory"]) == workdir and Path(svc["WorkingDirectory"]).is_absolute()
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert "network.target" in unit["Unit"]["After"] and unit["Unit"]["StartLimitIntervalSec"] == "0"

    argv = exec_argv(svc["ExecStart"])
    assert argv[0] == os.path.abspath(sys.executable) and argv[1:4] == ["-m", "edgesqueeze.cli", "camera"]
    again = parse_args(argv[4:])
    assert again.model == str(workdir / "int8.tflite") and again.fp32 == str(workdir / "fp32.tflite")
    assert again.source == str(workdir / "frames")
    assert again.headless is True  # a service has no display: JSON lines to stdout -> the journal
    for name, value in vars(args).items():  # every other option survives the round trip
        if name not in ("model", "fp32", "source", "headless"):
            assert getattr(again, name) == value, name
    assert (again.loop, again.shadow_every, again.threads, again.max_reconnects, again.capture) == \
        (True, 5, 3, -1, "thread")


def test_defaults_stay_out_of_the_command_and_cameras_stay_as_given(workdir):
    argv = exec_argv(read_unit(CLI.systemd_unit(parse_args(["--model", "int8.tflite"]), user="root"))
                     ["Service"]["ExecStart"])
    assert argv[4:] == ["--model", str(workdir / "int8.tflite"), "--source", "0", "--headless"]
    for source in ("/dev/video2", "picamera2", "1"):
        unit = read_unit(CLI.systemd_unit(parse_args(["--model", "int8.tflite", "--source", source]), user="root"))
        assert parse_args(exec_argv(unit["Service"]["ExecStart"])[4:]).source == source
        assert "Wants" not in unit["Unit"]
    stream = read_unit(CLI.systemd_unit(parse_args(["--model", "int8.tflite", "--source", "rtsp://cam/live"]),
                                      user="root"))
    assert stream["Unit"]["Wants"] == "network-online.target" and stream["Unit"]["After"] == "network-online.target"


def test_odd_characters_in_paths_survive_quoting(tmp_path, monkeypatch):
    odd = tmp_path / 'my "models" 100% $HOME\\x'
    odd.mkdir()
    monkeypatch.chdir(odd)
    model = fake_tflite(odd / "int8 v2.tflite")
    unit = read_unit(CLI.systemd_unit(parse_args(["--model", model.name]), user="root"))
    argv = exec_argv(unit["Service"]["ExecStart"])
    assert parse_args(argv[4:]).model == str(model)
    wd = unit["Service"]["WorkingDirectory"]
    assert exec_argv(wd) == [str(odd)]
    for bad in ("a\nExecStartPre=/bin/rm", "tab\there"):
        with pytest.raises(OptionError, match="control character"):
            C.systemd_quote(bad)
    assert C.systemd_quote("/plain/path-1.tflite") == "/plain/path-1.tflite"


def test_missing_or_bad_model_is_a_clear_error_and_nothing_is_printed(workdir, capsys):
    with pytest.raises(ModelFileError, match=r"--model: .*nope\.tflite: not found"):
        CLI.run_camera(parse_args(["--model", "nope.tflite", "--print-systemd-unit"]))
    (workdir / "notes.tflite").write_text("hello")
    with pytest.raises(ModelFileError, match="not a usable TFLite model"):
        CLI.run_camera(parse_args(["--model", "notes.tflite", "--print-systemd-unit"]))
    with pytest.raises(ModelFileError, match="--fp32"):
        CLI.run_camera(parse_args(["--model", "int8.tflite", "--fp32", "gone.onnx", "--print-systemd-unit"]))
    with pytest.raises(DataError, match="--source nowhere"):
        CLI.run_camera(parse_args(["--model", "int8.tflite", "--source", "nowhere", "--print-systemd-unit"]))
    with pytest.raises(OptionError, match="--unit-user"):
        CLI.run_camera(parse_args(["--model", "int8.tflite", "--unit-user", "no-such-user-xq", "--print-systemd-unit"]))
    with pytest.raises(OptionError, match="--out"):
        CLI.run_camera(parse_args(["--model", "int8.tflite", "--out", "no/dir/a.avi", "--print-systemd-unit"]))
    assert capsys.readouterr().out == ""


def test_install_writes_the_whole_unit_or_nothing(workdir, capsys):
    target = workdir / "units" / "edgesqueeze-camera.service"
    target.parent.mkdir()
    args = parse_args(["--model", "int8.tflite", "--install-systemd-unit", str(target)])
    assert CLI.run_camera(args) == 0
    assert target.read_text() == CLI.systemd_unit(args)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert "systemctl daemon-reload" in capsys.readouterr().err

    before = target.read_text()
    with pytest.raises(ModelFileError):  # a bad model: the installed unit is left as it was
        CLI.run_camera(parse_args(["--model", "gone.tflite", "--install-systemd-unit", str(target)]))
    assert target.read_text() == before
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no partial file
    with pytest.raises(OptionError, match=r"\.service"):
        CLI.run_camera(parse_args(["--model", "int8.tflite", "--install-systemd-unit", str(workdir / "u.txt")]))
    with pytest.raises(EdgeSqueezeError, match="does not exist"):
        CLI.run_camera(parse_args(["--model", "int8.tflite", "--install-systemd-unit",
                                 str(workdir / "missing" / "x.service")]))
    assert not (workdir / "u.txt").exists() and not (workdir / "missing").exists()


def test_cli_prints_the_unit_and_reports_errors_in_one_line(workdir, capsys):
    assert main(["camera", "--model", "int8.tflite", "--print-systemd-unit", "--unit-user", "root"]) == 0
    out = capsys.readouterr().out
    assert read_unit(out)["Service"]["User"] == "root"
    assert main(["camera", "--model", "gone.tflite", "--print-systemd-unit"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "gone.tflite" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as e:  # print or install, not both
        main(["camera", "--model", "int8.tflite", "--print-systemd-unit", "--install-systemd-unit", "x.service"])
    assert e.value.code == 2


def test_example_unit_matches_the_generated_one(workdir):
    """demos/edgesqueeze-camera.service: the same sections and keys as a generated unit, and a
    command the camera parser accepts, headless, with absolute paths."""
    example = read_unit(TEMPLATE.read_text())
    generated = read_unit(CLI.systemd_unit(parse_args(["--model", "int8.tflite"]), user="root"))
    assert example.sections() == generated.sections()
    for section in generated.sections():
        assert set(example[section]) == set(generated[section]), section
    for key in ("Restart", "RestartSec", "StandardOutput", "StandardError", "Environment", "KillSignal"):
        assert example["Service"][key] == generated["Service"][key], key
    argv = exec_argv(example["Service"]["ExecStart"])
    assert Path(argv[0]).is_absolute() and argv[1:4] == ["-m", "edgesqueeze.cli", "camera"]
    args = parse_args(argv[4:])
    assert args.headless and Path(args.model).is_absolute()
    assert Path(example["Service"]["WorkingDirectory"]).is_absolute()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_unit(workdir):
    unit = workdir / "edgesqueeze-camera.service"
    unit.write_text(CLI.systemd_unit(parse_args(["--model", "int8.tflite", "--source", "frames", "--loop"]),
                                   user="root"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [ln for ln in (r.stdout + r.stderr).splitlines() if unit.name in ln]
    assert r.returncode == 0 and not complaints, r.stdout + r.stderr
    bad = workdir / "bad.service"  # the check can fail: a unit whose command does not exist
    bad.write_text(unit.read_text().replace(f"ExecStart={os.path.abspath(sys.executable)}",
                                            "ExecStart=/nonexistent/python"))
    r = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 or "nonexistent" in r.stderr


def test_unit_carries_the_live_page(workdir):
    """--serve goes into the service; --token-file made absolute (the service starts elsewhere);
    a page served on the LAN waits for the network."""
    args = parse_args(["--model", "int8.tflite", "--serve", "0.0.0.0:8080", "--serve-fps", "5",
                       "--token-file", "token"])
    unit = read_unit(CLI.systemd_unit(args, user="root"))
    argv = exec_argv(unit["Service"]["ExecStart"])
    again = parse_args(argv[4:])
    assert (again.serve, again.serve_fps, again.token_file) == ("0.0.0.0:8080", 5.0, str(workdir / "token"))
    assert unit["Unit"]["Wants"] == "network-online.target"
    local = read_unit(CLI.systemd_unit(parse_args(["--model", "int8.tflite", "--serve", "8080"]), user="root"))
    assert parse_args(exec_argv(local["Service"]["ExecStart"])[4:]).serve == "8080"
    assert "Wants" not in local["Unit"]
    for bad in (["--serve", "http"], ["--serve", "8080", "--serve-fps", "0"], ["--token-file", "t"]):
        with pytest.raises(OptionError, match="--serve|--token-file"):
            CLI.systemd_unit(parse_args(["--model", "int8.tflite", *bad]), user="root")
    with pytest.raises(OptionError, match="--token-file"):
        CLI.systemd_unit(parse_args(["--model", "int8.tflite", "--serve", "1", "--token-file", "no/dir/t"]),
                         user="root")
