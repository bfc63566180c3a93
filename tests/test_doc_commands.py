"""Every code block of README.md, docs/*.md and demos/README.md is checked by a rule here, and a
block no rule claims fails `test_every_code_block_is_claimed`, so a new snippet cannot go in
unchecked.

The rules, by what a command line starts with (after `sudo`):

- `edgesqueeze SUB ...` (also `~/venv/bin/edgesqueeze`): parsed by the real parser
  (`edgesqueeze.cli.build_parser`), and every option word must be one of the subcommand's
  option strings exactly (argparse would also take a prefix of a renamed option). The cheap ones
  run end to end (`RUNS`) in a folder holding a tiny exported model under the file names the
  docs use; the others say why not (`not_run_reason`).
- `python benchmarks/X.py ...` / `python demos/X.py ...`: the script exists and its own argparse
  parser accepts the words (one subprocess runs every script up to its `parse_args` and stops
  it there); option words must be exact. Two camera-demo lines run for real.
- `pip install ...`: the target is the checkout (`.`) or the wheel `pip wheel` writes for
  pyproject's name and version, and every extra named exists in pyproject.toml.
- `python -m pytest`: pytest is in the `dev` extra.
- Board-only lines (a venv on the board, the wheel install there, root, systemd): listed in
  `BOARD_ONLY` with the reason, where they are covered, and what is checked here.
- ```python blocks: run by tests/test_readme_snippets.py (README.md and docs/*.md).
- Blocks that are not commands (a JSON line, a file layout): listed in `DATA_BLOCKS`, each
  checked against what the code writes.

Inline code spans that name an `edgesqueeze` subcommand or a script are checked too: the
subcommand and every option in them exist.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shlex
import struct
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edgesqueeze.camera.systemd import UNIT_NAME, unit_text
from edgesqueeze.cli import build_parser, main

PROJECT = Path(__file__).resolve().parent.parent
DOC_FILES = ["README.md", *sorted(f"docs/{p.name}" for p in (PROJECT / "docs").glob("*.md")), "demos/README.md"]
PYPROJECT = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
WHEEL = f"{PYPROJECT['project']['name']}-{PYPROJECT['project']['version']}-py3-none-any.whl"
OPERATORS = {"&&", "||", ";", "|"}
REDIRECTS = {">", ">>", "2>", "2>>", "<", "&>"}
SHELL_LANGS = {None, "sh", "bash", "shell", "console"}


# ---------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the project
    line: int  # line number of the block's first line of content
    lang: str | None  # a fence's language; None for an indented block
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass(frozen=True)
class Command:
    block: Block
    line: int
    words: tuple[str, ...]  # one simple command: no operator, no redirection, no comment
    stdout_to: str | None  # the target of `> FILE`

    @property
    def text(self) -> str:
        """The words as the docs write them: quoted only where a word holds a space or a quote."""
        return " ".join(w if re.fullmatch(r"[\w@%+=:,./~*\[\]-]+", w) else shlex.quote(w) for w in self.words)

    @property
    def argv(self) -> tuple[str, ...]:
        """The words without a leading `sudo`."""
        return self.words[1:] if self.words[0] == "sudo" else self.words

    @property
    def kind(self) -> str | None:
        w = self.argv
        prog, rest = w[0], w[1:]
        if prog == "edgesqueeze" or prog.endswith("/bin/edgesqueeze"):
            return "cli"
        if prog in ("python", "python3") and rest:
            if re.fullmatch(r"(benchmarks|demos)/\w+\.py", rest[0]):
                return "script"
            if rest[:2] == ("-m", "pytest"):
                return "pytest"
            if rest[:2] == ("-m", "venv"):
                return "venv"
        if prog == "pip" and rest[:1] == ("install",):
            return "pip"
        if prog in (".", "source") and len(rest) == 1 and rest[0].endswith("/bin/activate"):
            return "activate"
        if prog in ("systemctl", "journalctl"):
            return "systemd"
        return None

    def __str__(self) -> str:
        return f"{self.block.doc}:{self.line}: {self.text}"


FENCE = re.compile(r"^(\s*)(```|~~~)\s*([\w+-]*)\s*$")


def read_blocks(doc: str) -> list[Block]:
    """Fenced blocks, and indented (4 spaces) blocks that start after a blank line."""
    lines = (PROJECT / doc).read_text(encoding="utf-8").splitlines()
    out, i, after_blank = [], 0, True
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == m.group(2)), None)
            assert end is not None, f"{doc}:{i + 1}: a fence that is never closed"
            body = [ln[len(m.group(1)):] if ln.startswith(m.group(1)) else ln.lstrip() for ln in lines[i + 1:end]]
            out.append(Block(doc, i + 2, m.group(3) or "", tuple(body)))
            i, after_blank = end + 1, False
            continue
        if after_blank and lines[i].startswith("    ") and lines[i].strip():
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = [ln[4:] for ln in lines[i:j]]
            while not body[-1].strip():
                body.pop()
            out.append(Block(doc, i + 1, None, tuple(body)))
            i, after_blank = j, True
            continue
        after_blank = not lines[i].strip()
        i += 1
    return out


def block_commands(block: Block) -> list[Command]:
    """Logical lines (`\\` joins a line to the next; a leading `$ ` prompt is dropped), split by
    shlex with comments, then at `&&`, `||`, `;` and `|`; `> FILE` is kept as stdout_to."""
    out, buf, start = [], "", None
    for k, raw in enumerate(block.lines):
        line = raw.rstrip()
        if start is None:
            if not line.strip():
                continue
            start = block.line + k
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        text = re.sub(r"^\s*\$ ", "", buf)
        words, stdout_to = [], None
        tokens = shlex.split(text, comments=True) + [";"]
        n = 0
        while n < len(tokens):
            t = tokens[n]
            if t in OPERATORS:
                if words:
                    out.append(Command(block, start, tuple(words), stdout_to))
                words, stdout_to = [], None
            elif re.fullmatch(r"\d?>&\d", t):
                pass  # 2>&1
            elif t in REDIRECTS:
                if t in (">", ">>"):
                    stdout_to = tokens[n + 1]
                n += 1  # the redirection's target
            else:
                words.append(t)
            n += 1
        buf, start = "", None
    assert not buf, f"{block}: a block ends with a `\\` continuation"
    return out


BLOCKS = [b for doc in DOC_FILES for b in read_blocks(doc)]


def data_block_key(block: Block) -> tuple[str, str] | None:
    for doc, first in DATA_BLOCKS:
        if block.doc == doc and block.lines[0].startswith(first):
            return doc, first
    return None


def shell_blocks() -> list[Block]:
    return [b for b in BLOCKS if b.lang in SHELL_LANGS and data_block_key(b) is None]


@functools.cache
def all_commands() -> tuple[Command, ...]:
    return tuple(c for b in shell_blocks() for c in block_commands(b))


def commands_of(kind: str) -> list[Command]:
    return [c for c in all_commands() if c.kind == kind]


def cmd_id(c: Command) -> str:
    return f"{c.block.doc}:{c.line}:{c.text[:60]}"


# ---------------------------------------------------------------- the argparse parsers


def cli_parser():
    return build_parser()


def subparsers(parser) -> dict:
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def option_words(words) -> list[str]:
    """The words that are options (`-x`, `--xy`, `--xy=v`), not negative numbers."""
    return [w.split("=", 1)[0] for w in words if w.startswith("-") and not re.fullmatch(r"-\d[\d.]*", w)]


# One interpreter runs each script as `python script ARGS` until its parse_args returns, then
# stops it there: nothing after the parsing runs. Prints one JSON line: per case, the parser's
# option strings and the exit code and message of a failed parse.
DRIVER = textwrap.dedent(r"""
    import argparse, contextlib, io, json, runpy, sys
    cases = json.load(sys.stdin)

    class Parsed(BaseException):
        pass

    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        options = sorted(self._option_string_actions)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                original(self, args, namespace)
        except SystemExit as e:
            raise Parsed({"options": options, "exit": e.code, "stderr": err.getvalue()[-600:]})
        raise Parsed({"options": options, "exit": None})

    argparse.ArgumentParser.parse_args = parse_args
    results = []
    for script, argv in cases:
        sys.argv = [script, *argv]
        sys.path.insert(0, script.rsplit("/", 1)[0])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                runpy.run_path(script, run_name="__main__")
            results.append({"error": "the script ended without parsing its arguments"})
        except Parsed as p:
            results.append(p.args[0])
        except BaseException as e:
            results.append({"error": f"{type(e).__name__}: {e}"})
        finally:
            sys.path.pop(0)
    print(json.dumps(results))
""")


def inline_scripts() -> list[tuple[str, str, tuple[str, ...]]]:
    """(doc, span, words) of inline code spans that run a script: `python benchmarks/X.py ...`."""
    out = []
    for doc, span in inline_spans():
        m = re.match(r"python3? ((?:benchmarks|demos)/\w+\.py)\b(.*)", span)
        if m:
            out.append((doc, span, (m.group(1), *shlex.split(m.group(2)))))
    return out


@pytest.fixture(scope="module")
def script_parses():
    """{(script, argv): result} for every script command of the code blocks and inline spans."""
    cases = sorted({(c.argv[1], tuple(c.argv[2:])) for c in commands_of("script")}
                   | {(w[0], tuple(w[1:])) for _, _, w in inline_scripts()})
    present = [c for c in cases if (PROJECT / c[0]).is_file()]
    r = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(present), capture_output=True, text=True,
                       cwd=PROJECT, env={**os.environ, "PYTHONPATH": str(PROJECT)}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(zip(present, json.loads(r.stdout.splitlines()[-1])))


# ---------------------------------------------------------------- what is not a command


def check_json_line(block: Block, ran: dict) -> None:
    """docs/camera.md's JSON line: valid JSON with exactly the keys of the demo's frame lines
    (as `edgesqueeze camera ... > frames.jsonl` printed them in RUNS)."""
    doc_line = json.loads(" ".join(s.strip() for s in block.lines))
    frames = ran["frames.jsonl"]
    assert set(doc_line) == set(frames[0]), (f"{block}: the documented JSON line has keys {sorted(doc_line)}, the "
                                              f"demo prints {sorted(frames[0])}")
    assert [len(t) for t in doc_line["top3"]] == [2, 2, 2] and all(len(t) == 2 for t in frames[0]["top3"])


def check_contract(block: Block, ran: dict) -> None:
    """docs/formats.md's input and output contract, read from a tiny exported INT8 .tflite and
    .onnx file by `describe`."""
    from edgesqueeze.runtime import describe

    text = block.text
    t, o = describe(ran["tflite"]), describe(ran["onnx"])
    assert "input   uint8 NHWC [1, S, S, 3]" in text
    s = t.metadata.input_size
    assert [(i.dtype, i.shape) for i in t.inputs] == [("uint8", (1, s, s, 3))]
    assert [i.dtype for i in o.inputs] == ["uint8"] and o.inputs[0].shape[1:] == (s, s, 3)
    assert "cv2.INTER_LINEAR_EXACT" in text and "cv2.INTER_LINEAR_EXACT" in t.metadata.pixel_format
    m = re.search(r'output  float32 \[1, classes\] "(\w+)"', text)
    assert m, f"{block}: no output line"
    classes = len(t.metadata.labels)
    assert [(x.name, x.dtype, x.shape) for x in t.outputs] == [(m.group(1), "float32", (1, classes))]
    extra = re.search(r'ONNX files also output "(\w+)"', text).group(1)
    assert [x.name for x in o.outputs] == [m.group(1), extra]


def check_bundle_layout(block: Block, ran: dict) -> None:
    """docs/formats.md's bundle header: the offsets, sizes and magic bytes of a bundle that
    `edgesqueeze pack` wrote."""
    rows = [re.match(r"offset (\S+(?: \+ M)?)\s+(?:(\d+|M) bytes\s+)?(.*)", ln.strip()) for ln in block.lines]
    assert all(rows), f"{block}: a line that is not `offset ...`"
    data = ran["bundle"].read_bytes()
    magic = bytes.fromhex(rows[0].group(3).replace("magic", ""))
    assert rows[0].group(1) == "0" and rows[0].group(2) == str(len(magic)) and data[:len(magic)] == magic
    assert (rows[1].group(1), rows[1].group(2)) == ("8", "4") and "uint32 little-endian" in rows[1].group(3)
    (m,) = struct.unpack("<I", data[8:12])
    assert (rows[2].group(1), rows[2].group(2)) == ("12", "32") and "sha256 of the manifest" in rows[2].group(3)
    assert (rows[3].group(1), rows[3].group(2)) == ("44", "M") and "UTF-8 JSON" in rows[3].group(3)
    manifest = data[44:44 + m]
    assert data[12:44] == hashlib.sha256(manifest).digest()
    assert json.loads(manifest.decode("utf-8"))
    assert rows[4].group(1) == "44 + M" and rows[4].group(3) == "payload" and len(data) > 44 + m


# (doc, how the block's first line starts) -> the check
DATA_BLOCKS = {
    ("docs/camera.md", '{"frame": 0,'): check_json_line,
    ("docs/formats.md", "input   uint8 NHWC"): check_contract,
    ("docs/formats.md", "offset 0 "): check_bundle_layout,
}


# ---------------------------------------------------------------- board-only lines


def unit_comment_commands() -> set[str]:
    """The install and journal commands that the unit the code writes names in its comments."""
    out = set()
    for line in unit_text(["python3", "-m", "edgesqueeze.cli", "camera"], user="pi", workdir="/home/pi").splitlines():
        if line.startswith("#"):
            out |= {part.strip() for part in line.lstrip("# ").rsplit(": ", 1)[-1].split("&&")}
    return out


def example_unit_venv() -> str:
    """The venv of demos/edgesqueeze-camera.service's ExecStart, as `~/NAME` for its user pi."""
    text = (PROJECT / "demos" / "edgesqueeze-camera.service").read_text(encoding="utf-8")
    m = re.search(r"^ExecStart=/home/pi/([^/\s]+)/bin/python3? ", text, re.M)
    assert m, "demos/edgesqueeze-camera.service: no ExecStart in a venv under /home/pi"
    return f"~/{m.group(1)}"


def check_venv(c: Command) -> None:
    target = c.argv[-1] if c.kind == "venv" else c.argv[1].removesuffix("/bin/activate")
    assert target == example_unit_venv(), f"{c}: the venv is {target}, the example unit runs {example_unit_venv()}"


def check_wheel_install(c: Command) -> None:
    check_pip(c)
    (target,) = [w for w in c.argv[2:] if not w.startswith("-")]
    assert target.split("[")[0] == WHEEL


def check_systemd_words(c: Command) -> None:
    """The unit name is the one the code writes, and the command is the one its unit names."""
    names = [w.removeprefix("/etc/systemd/system/") for w in c.argv if "edgesqueeze-camera" in w]
    assert all(n in (UNIT_NAME, UNIT_NAME.removesuffix(".service")) for n in names), f"{c}: the code writes {UNIT_NAME}"
    if c.kind == "systemd":
        assert c.text in unit_comment_commands(), f"{c}: the unit the code writes names other commands"


def check_install_unit(c: Command) -> None:
    check_cli_words(c)
    check_systemd_words(c)
    assert c.argv[0] == f"{example_unit_venv()}/bin/edgesqueeze", c


BOARD_INSTALL = ("demos/board_check.py setup_board(): `pi-emu setup`, `pi-emu reset` (a fresh emulated Pi 4), "
                 "`pi-emu pip install .[tflite,camera]` and `.[onnx,camera]` (`--legacy`: `.[legacy,camera]`), "
                 "then checks torch is absent (its pip steps checked here with a stand-in pi-emu)")
SYSTEMD = ("tests/test_systemd.py (the unit the code writes, its ExecStart re-parsed, systemd-analyze verify where "
           "installed); systemd itself is not run")
# the command as Command.text gives it -> (why it is not run here, where it is covered, the check run here)
BOARD_ONLY = {
    "python3 -m venv ~/edgesqueeze": (
        "makes the board's venv", BOARD_INSTALL, check_venv),
    ". ~/edgesqueeze/bin/activate": (
        "the board's venv", BOARD_INSTALL, check_venv),
    "pip install edgesqueeze-0.1.0-py3-none-any.whl[tflite,camera]": (
        "installs on the board from the copied wheel", BOARD_INSTALL, check_wheel_install),
    "pip install edgesqueeze-0.1.0-py3-none-any.whl[legacy,camera]": (
        "installs the older runtime on the board (Python <= 3.11)", BOARD_INSTALL + " with --legacy",
        check_wheel_install),
    "pip install edgesqueeze-0.1.0-py3-none-any.whl[tflite]": (
        "installs on the board from the copied wheel", BOARD_INSTALL, check_wheel_install),
    "sudo ~/edgesqueeze/bin/edgesqueeze camera --model ~/squeezenet1_0-affine-int8.tflite --source 0 "
    "--install-systemd-unit /etc/systemd/system/edgesqueeze-camera.service": (
        "root, writes into /etc/systemd/system", SYSTEMD + "; run here by RUNS with ~ and /etc under a temporary "
        "folder", check_install_unit),
    "sudo systemctl daemon-reload": ("root, a booted systemd", SYSTEMD, check_systemd_words),
    "sudo systemctl enable --now edgesqueeze-camera": ("root, a booted systemd", SYSTEMD, check_systemd_words),
    "journalctl -u edgesqueeze-camera -f -o cat": ("a booted systemd running the unit", SYSTEMD, check_systemd_words),
}
BOARD_PROGRAMS = {"apt", "apt-get", "curl", "ssh", "scp", "systemctl", "journalctl"}


def is_board_only(c: Command) -> bool:
    prog = c.argv[0]
    return (c.words[0] == "sudo" or c.kind in ("venv", "activate", "systemd") or prog in BOARD_PROGRAMS
            or "pi-emu" in prog or any(w.endswith(".whl") or ".whl[" in w for w in c.argv))


# ---------------------------------------------------------------- the checks per kind


def check_cli_words(c: Command) -> None:
    """Parsed by the real parser; every option word exactly one of the subcommand's options."""
    parser = cli_parser()
    words = list(c.argv[1:])
    try:
        parser.parse_args(words)
    except SystemExit as e:
        pytest.fail(f"{c}: `edgesqueeze` refuses it (exit {e.code})")
    sub = subparsers(parser)[words[0]]
    unknown = [w for w in option_words(words[1:]) if w not in sub._option_string_actions]
    assert not unknown, f"{c}: not options of `edgesqueeze {words[0]}` (only a prefix of one?): {unknown}"


def check_pip(c: Command) -> None:
    targets = [w for w in c.argv[2:] if not w.startswith("-")]
    assert targets, c
    for t in targets:
        m = re.fullmatch(r"([^\[\]]+)(?:\[([\w,-]+)\])?", t)
        assert m, f"{c}: cannot read {t!r}"
        assert m.group(1) in (".", WHEEL), (f"{c}: installs {m.group(1)!r}; edgesqueeze installs from the checkout "
                                            f"(`.`) or from the wheel `pip wheel --no-deps . -w dist` writes ({WHEEL})")
        extras = set((m.group(2) or "").split(",")) - {""}
        assert extras <= EXTRAS, f"{c}: extras {sorted(extras - EXTRAS)} are not in pyproject.toml ({sorted(EXTRAS)})"


def not_run_reason(c: Command) -> str | None:
    """Why a parsed `edgesqueeze` command is not run end to end here (None: it must be in RUNS)."""
    words = c.argv[1:]
    if words[0] == "quantize":
        return "the main job (about a minute, the shared data); its Python form runs in test_readme_snippets"
    if words[0] == "eval":
        return "the shared data's 406 evaluation images"
    if words[0] == "camera" and "--source" in words and words[words.index("--source") + 1] in ("0", "picamera2"):
        return ("a camera; the same options run on a clip in RUNS, and on the emulated board demos/board_check.py "
                "main() step 5 runs `edgesqueeze classify` and `edgesqueeze camera --headless` on a clip")
    if words[0] == "camera" and "--loop" in words and "--max-frames" not in words:
        return "--loop without --max-frames runs until stopped"
    return None


def script_not_run_reason(c: Command) -> str | None:
    script, words = c.argv[1], c.argv[2:]
    if script.startswith("benchmarks/"):
        return "a benchmark: minutes of measurement (tests/test_benchmarks_run.py covers run.py's pure parts)"
    if script == "demos/board_check.py":
        return "the emulated-board check: minutes under QEMU (tests/test_board_check.py covers its pure parts)"
    if script == "demos/interop_check.py":
        return "makes venvs with MediaPipe and the Task Library from the network"
    if script == "demos/camera.py":
        src = words[words.index("--source") + 1] if "--source" in words else "0"
        if src in ("0", "picamera2"):
            return "a camera"
        if "--loop" in words and "--max-frames" not in words:
            return "--loop without --max-frames runs until stopped"
    return None


# ---------------------------------------------------------------- the tests: every block claimed


def claim(block: Block) -> list[str]:
    """What is wrong with a block no rule claims (empty: claimed)."""
    if block.lang == "python":
        return []  # test_python_blocks_are_run_by_the_snippet_test
    if data_block_key(block) is not None:
        return []
    if block.lang not in SHELL_LANGS:
        return [f"{block}: a ```{block.lang} block that no rule of tests/test_doc_commands.py checks"]
    cmds = block_commands(block)
    if not cmds:
        return [f"{block}: a block without a command (list it in DATA_BLOCKS with a check)"]
    return [f"{c}: no rule checks this line (add one to tests/test_doc_commands.py)" for c in cmds if c.kind is None]


def test_every_code_block_is_claimed():
    problems = [p for b in BLOCKS for p in claim(b)]
    assert not problems, "\n".join(problems)
    for key in DATA_BLOCKS:
        assert any(data_block_key(b) == key for b in BLOCKS), f"DATA_BLOCKS: no block {key} in the docs"


def test_the_docs_have_the_commands_this_test_expects():
    kinds = {k: len(commands_of(k)) for k in ("cli", "script", "pip", "pytest", "venv", "activate", "systemd")}
    assert kinds["cli"] >= 10 and kinds["script"] >= 4 and kinds["pip"] >= 4, kinds
    assert {b.doc for b in BLOCKS} == set(DOC_FILES), "a doc without a code block: is the block reader broken?"


def test_board_only_lines_are_listed_with_reason_and_checked():
    board = {c.text: c for c in all_commands() if is_board_only(c)}
    unlisted = sorted(set(board) - set(BOARD_ONLY))
    assert not unlisted, "board-only lines not in BOARD_ONLY (say why, where they are covered, what is checked):\n" + \
        "\n".join(str(board[t]) for t in unlisted)
    stale = sorted(set(BOARD_ONLY) - set(board))
    assert not stale, f"BOARD_ONLY lists lines no doc has: {stale}"
    for text, (reason, covered, check) in BOARD_ONLY.items():
        assert reason and covered
        check(board[text])


def test_board_check_installs_what_the_docs_install_on_the_board(tmp_path):
    """demos/board_check.py's setup_board runs `pi-emu setup`, `reset` and `pip install
    .[EXTRA,camera]` for each group; a stand-in pi-emu records the calls. Every extra set the docs
    install on the board is one board_check installs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("board_check", PROJECT / "demos" / "board_check.py")
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    log = tmp_path / "calls"
    emu = tmp_path / "pi-emu"
    emu.write_text(f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = python ] && echo None\nexit 0\n')
    emu.chmod(0o755)
    ok, _ = bc.setup_board(str(emu), ["legacy", "tflite", "onnx"], timeout=30)
    calls = log.read_text().splitlines()
    assert ok and calls[:2] == ["setup", "reset"], calls
    installed = {c.removeprefix("pip install .") for c in calls if c.startswith("pip install .")}
    assert installed == {"[legacy,camera]", "[tflite,camera]", "[onnx,camera]"}
    for c in all_commands():
        if c.kind == "pip" and is_board_only(c):
            extras = "[" + c.argv[-1].split("[", 1)[1]
            assert extras in installed or extras.replace("]", ",camera]") in installed, \
                f"{c}: demos/board_check.py does not install {extras} on the emulated board"


def test_python_blocks_are_run_by_the_snippet_test():
    """```python blocks are run by tests/test_readme_snippets.py, which reads the same files."""
    import test_readme_snippets as trs

    ours = [(b.doc, b.text.strip()) for b in BLOCKS if b.lang == "python"]
    theirs = [(str(p.relative_to(PROJECT)), code.strip()) for p, _, code in trs.python_snippets()]
    assert ours and sorted(ours) == sorted(theirs)


# ---------------------------------------------------------------- the tests: per command


@pytest.mark.parametrize("c", commands_of("cli"), ids=cmd_id)
def test_edgesqueeze_command_parses(c):
    check_cli_words(c)
    assert c.text in RUNS or not_run_reason(c), f"{c}: neither run in RUNS nor given a reason not to run"


@pytest.mark.parametrize("c", commands_of("script"), ids=cmd_id)
def test_script_exists_and_accepts_the_options(c, script_parses):
    script, argv = c.argv[1], tuple(c.argv[2:])
    assert (PROJECT / script).is_file(), f"{c}: no {script}"
    r = script_parses[(script, argv)]
    assert "error" not in r, f"{c}: {r['error']}"
    assert r["exit"] is None, f"{c}: the script's parser refuses it (exit {r['exit']}): {r['stderr']}"
    unknown = [w for w in option_words(argv) if w not in r["options"]]
    assert not unknown, f"{c}: not options of {script} (only a prefix of one?): {unknown}"
    assert c.text in RUNS or script_not_run_reason(c), f"{c}: neither run in RUNS nor given a reason not to run"


@pytest.mark.parametrize("c", commands_of("pip"), ids=cmd_id)
def test_pip_install_names_real_extras(c):
    check_pip(c)


@pytest.mark.parametrize("c", commands_of("pytest"), ids=cmd_id)
def test_pytest_comes_with_the_dev_extra(c):
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert any(re.match(r"pytest\b", d) for d in dev)
    assert (PROJECT / PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"][0]).is_dir()


# ---------------------------------------------------------------- inline code spans


def inline_spans() -> list[tuple[str, str]]:
    """(doc, text) of the inline code spans outside code blocks."""
    out = []
    for doc in DOC_FILES:
        inside = {(b.line + k) for b in BLOCKS if b.doc == doc for k in range(-1, len(b.lines) + 1)}
        for n, line in enumerate((PROJECT / doc).read_text(encoding="utf-8").splitlines(), 1):
            if n not in inside:
                out += [(doc, s) for s in re.findall(r"`([^`]+)`", line)]
    return out


def test_inline_edgesqueeze_spans_name_real_subcommands_and_options():
    parser = cli_parser()
    subs = subparsers(parser)
    seen = 0
    for doc, span in inline_spans():
        m = re.match(r"edgesqueeze (\S+)(.*)", span)
        if not m:
            continue
        seen += 1
        if m.group(1).startswith("{"):
            named = set(re.findall(r"\w+", span.removeprefix("edgesqueeze")))
            assert named == set(subs), f"{doc}: `{span}` against the subcommands {sorted(subs)}"
            continue
        assert m.group(1) in subs, f"{doc}: `{span}`: no subcommand {m.group(1)!r}"
        unknown = [w for w in option_words(m.group(2).replace("[", " ").replace("]", " ").split())
                   if w not in subs[m.group(1)]._option_string_actions]
        assert not unknown, f"{doc}: `{span}`: not options of `edgesqueeze {m.group(1)}`: {unknown}"
    assert seen >= 10


def test_inline_script_spans_name_real_scripts_and_options(script_parses):
    spans = inline_scripts()
    assert len(spans) >= 5
    for doc, span, words in spans:
        assert (PROJECT / words[0]).is_file(), f"{doc}: `{span}`: no {words[0]}"
        r = script_parses[(words[0], tuple(words[1:]))]
        assert "options" in r, f"{doc}: `{span}`: {r}"
        unknown = [w for w in option_words(words[1:]) if w not in r["options"]]
        assert not unknown, f"{doc}: `{span}`: not options of {words[0]}: {unknown}"
    table = (PROJECT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    named = re.findall(r"^\| `(\w+\.py)`(?:, `(\w+\.py)`)?", table, re.M)
    assert len(named) >= 8
    for row in named:
        for name in filter(None, row):
            assert (PROJECT / "benchmarks" / name).is_file(), f"docs/benchmarks.md names benchmarks/{name}"


def test_file_names_in_the_commands_are_the_main_jobs():
    """export/NAME in the commands: the names the main job gives the default model's files."""
    from edgesqueeze.arch import squeezenet1_0_arch
    from edgesqueeze.quant.params import Scheme

    job = (PROJECT / "edgesqueeze" / "job.py").read_text(encoding="utf-8")
    arch = squeezenet1_0_arch(caffe=True).name
    names = {w.split("/")[-1] for c in all_commands() for w in c.argv
             if re.fullmatch(r"export/[\w.-]+\.(tflite|onnx)", w)}
    assert names
    for name in names:
        m = re.fullmatch(rf"{arch}-(?:(\w+)-int8|fp32)\.(tflite|onnx)", name)
        assert m, f"export/{name}: not a name the main job writes for {arch}"
        assert m.group(1) in (None, *(s.value for s in Scheme))
        suffix = f"-{'int8' if m.group(1) else 'fp32'}.{m.group(2)}"
        assert suffix + '"' in job, f"edgesqueeze/job.py writes no *{suffix} file"


# ---------------------------------------------------------------- running the cheap ones


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder where the docs' commands run as written: a tiny INT8 .tflite under every name
    the run commands use, an image, two short clips, a home with the model, and /etc's folder."""
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("onnx")
    from dataclasses import replace

    from test_quant import PRE, minmax_ranges, tiny_arch, tiny_params

    from edgesqueeze.export.onnx import to_onnx
    from edgesqueeze.export.tflite import to_tflite
    from edgesqueeze.quant.quantize import quantize_model

    arch = replace(tiny_arch(), preprocess=replace(PRE, crop=35))
    params = tiny_params(arch)
    calib = np.random.default_rng(1).integers(0, 256, (6, 35, 35, 3), dtype=np.uint8)
    qm = quantize_model(arch, params, minmax_ranges(arch, params, calib), labels=tuple(f"class {i}" for i in range(10)),
                        calibration={"method": "minmax", "images": 6, "split": "random test images"})
    d = tmp_path_factory.mktemp("doc_commands")
    (d / "export").mkdir()
    model = to_tflite(qm, d / "export" / "squeezenet1_0-affine-int8.tflite").path
    to_onnx(qm, d / "export" / "squeezenet1_0-affine-int8.onnx", target="arm")
    for name in ("squeezenet1_0-affine-int8.tflite", "m.tflite", "home/squeezenet1_0-affine-int8.tflite"):
        (d / name).parent.mkdir(exist_ok=True)
        (d / name).write_bytes(Path(model).read_bytes())
    (d / "etc" / "systemd" / "system").mkdir(parents=True)
    rng = np.random.default_rng(2)
    cv2.imwrite(str(d / "photo.jpg"), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    for name, fourcc in (("any_video.avi", "MJPG"), ("clip.mp4", "mp4v")):
        w = cv2.VideoWriter(str(d / name), cv2.VideoWriter_fourcc(*fourcc), 10, (96, 72))
        assert w.isOpened()
        for _ in range(12):
            w.write(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8))
        w.release()
    return d


def local(word: str, d: Path) -> str:
    """A doc's path word in the folder: ~ is d/home, /etc is d/etc."""
    if word.startswith("~/"):
        return str(d / "home" / word[2:])
    if word.startswith("/etc/"):
        return str(d / word[1:])
    return word


@functools.cache
def run_doc_command(text: str, d: Path) -> tuple[int, str, str]:
    """The doc line `text`, once: `edgesqueeze ...` in this interpreter (`main`), a script as
    `python SCRIPT` in a child; both in the folder, stdout to the `> FILE` when the line has one."""
    c = next(c for c in all_commands() if c.text == text)  # the same line in two docs runs once
    words = [local(w, d) for w in c.argv]
    if c.kind == "cli":
        cwd, out, err = os.getcwd(), io.StringIO(), io.StringIO()
        os.chdir(d)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(words[1:])
        finally:
            os.chdir(cwd)
        rc, out, err = rc, out.getvalue(), err.getvalue()
    else:
        r = subprocess.run([sys.executable, str(PROJECT / words[1]), *words[2:]], capture_output=True, text=True,
                           cwd=d, timeout=120, env={**os.environ, "HOME": str(d / "home")})
        rc, out, err = r.returncode, r.stdout, r.stderr
    if c.stdout_to:
        (d / c.stdout_to).write_text(out)
    return rc, out, err


def ran_classify(d, rc, out, err):
    assert rc == 0, err
    assert "photo.jpg" in out and "class " in out, out


def ran_smoke_test(d, rc, out, err):
    """demos/README.md: "exits with code 0 and prints 11 JSON lines (10 frames and the summary)"."""
    assert rc == 0, err
    lines = [json.loads(s) for s in out.splitlines()]
    assert len(lines) == 11 and lines[-1]["summary"] is True and lines[-1]["frames"] == 10


def ran_to_jsonl(d, rc, out, err):
    assert rc == 0, err
    lines = [json.loads(s) for s in (d / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 13 and lines[-1]["summary"] is True and lines[-1]["stop_reason"] == "end-of-stream"


def ran_install_unit(d, rc, out, err):
    assert rc == 0, err
    unit = d / "etc" / "systemd" / "system" / UNIT_NAME
    text = unit.read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1).split()
    assert exec_start[1:4] == ["-m", "edgesqueeze.cli", "camera"] and "--source" in exec_start
    assert exec_start[exec_start.index("--model") + 1] == str(d / "home" / "squeezenet1_0-affine-int8.tflite")
    assert "sudo systemctl enable --now edgesqueeze-camera" in err


CLIP_TO_JSONL = "edgesqueeze camera --model m.tflite --source clip.mp4 --headless --max-frames 100"
# the command as Command.text gives it -> the check of its run
RUNS = {
    "edgesqueeze classify squeezenet1_0-affine-int8.tflite photo.jpg": ran_classify,
    "python demos/camera.py --model export/squeezenet1_0-affine-int8.tflite --source any_video.avi --headless "
    "--max-frames 10": ran_smoke_test,
    CLIP_TO_JSONL: ran_to_jsonl,
    "sudo ~/edgesqueeze/bin/edgesqueeze camera --model ~/squeezenet1_0-affine-int8.tflite --source 0 "
    "--install-systemd-unit /etc/systemd/system/edgesqueeze-camera.service": ran_install_unit,
}


def test_runs_are_doc_commands():
    texts = {c.text for c in all_commands()}
    assert set(RUNS) <= texts, f"RUNS names lines no doc has: {sorted(set(RUNS) - texts)}"


@pytest.mark.parametrize("text", list(RUNS))
def test_doc_command_runs(text, folder):
    RUNS[text](folder, *run_doc_command(text, folder))


@functools.cache
def info_and_pack(d: Path) -> tuple[int, str, int, Path]:
    model = d / "export" / "squeezenet1_0-affine-int8.tflite"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc_info = main(["info", str(model)])
    info = out.getvalue()
    with contextlib.redirect_stdout(io.StringIO()):
        rc_pack = main(["pack", str(model)])
    return rc_info, info, rc_pack, model


def test_info_and_pack_as_the_docs_name_them(folder):
    """`edgesqueeze info MODEL` and `edgesqueeze pack MODEL` (inline in docs/formats.md and the
    README) on the tiny model; the bundle is the one DATA_BLOCKS' layout check reads."""
    spans = {s for _, s in inline_spans()}
    assert {"edgesqueeze info MODEL", "edgesqueeze pack MODEL"} <= spans
    rc_info, info, rc_pack, model = info_and_pack(folder)
    assert rc_info == 0 and "class 0" in info and "affine" in info, info
    assert rc_pack == 0 and model.with_name(model.name + ".esq").is_file()


@pytest.mark.parametrize("key", list(DATA_BLOCKS), ids=lambda k: f"{k[0]}:{k[1][:12]}")
def test_data_block_matches_the_code(key, folder):
    rc, _, err = run_doc_command(CLIP_TO_JSONL, folder)
    assert rc == 0, err
    model = info_and_pack(folder)[3]
    ran = {"frames.jsonl": [json.loads(s) for s in (folder / "frames.jsonl").read_text().splitlines()][:-1],
           "bundle": model.with_name(model.name + ".esq"), "tflite": model, "onnx": model.with_suffix(".onnx")}
    (block,) = [b for b in BLOCKS if data_block_key(b) == key]
    DATA_BLOCKS[key](block, ran)
