"""User errors from the CLI: one line, exit code 2, no traceback."""

from edgesqueeze.cli import main


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
