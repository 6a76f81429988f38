"""Every ```python block of the documentation runs.

Each fenced block opened with ```python in ``docs/**/*.md`` and ``README.md`` is run in a
fresh process of this interpreter (the project's virtualenv), from the repository root, with a
timeout. A block opened with ```python no-run is only compiled: it needs something a sample
cannot bring along (a running deployment, a real Redis, your own models).

The block is compiled under the Markdown file's name and padded to its first line, so a
traceback names the page and the line in it. A block that needs a helper imports it from
``docs/_samples.py`` (the repository root is on ``sys.path``), so what a reader copies is what
runs.

A page that builds a file step by step (the tutorial) marks those blocks ```python file=PATH:
PATH's blocks, in page order, are that file; each is run after the ones before it, in one
namespace, as the reader's growing file would run, with PATH's folder on ``sys.path``; and
the blocks, joined by two blank lines, must be exactly the file PATH in the repository.
```python dir=FOLDER runs a block with FOLDER on ``sys.path`` (a reader's shell in the folder
of the files the page built).

Blocks are started a few at a time ahead of the test that checks them (the machine is
shared, and each block costs an interpreter start), and every process is killed and reaped,
also when a test fails.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 40.0  # seconds per block; the pytest timeout (60 s) is the backstop
AHEAD = 3  # blocks running at once

# An opening fence: up to 3 spaces of indentation (more inside list items is allowed too),
# three or more backticks, the info string. CommonMark 4.5.
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})(?P<info>[^`]*)$")

# What the runner does in the child: compile each part under the page's name, padded so that
# line numbers are the page's, and run the parts in one namespace as __main__.
_RUNNER = """\
import json, sys
spec = json.load(sys.stdin)
if spec["dir"]:
    sys.path.insert(0, spec["dir"])
sys.argv = [spec["file"]]
namespace = {"__name__": "__main__", "__file__": spec["file"]}
for first, source in spec["parts"]:
    exec(compile("\\n" * (first - 1) + source, spec["page"], "exec"), namespace)
"""


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: the page (relative to the root), the line of its first code line."""

    path: str
    line: int
    source: str
    run: bool
    file: str | None = None  # file=PATH: a step of that file
    dir: str | None = None  # dir=FOLDER: run with FOLDER on sys.path

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def pages() -> list[Path]:
    """The Markdown files whose samples are checked."""
    found = sorted((ROOT / "docs").rglob("*.md"))
    return [*found, ROOT / "README.md"]


def blocks_of(page: Path, root: Path = ROOT) -> Iterator[Block]:
    """The ```python blocks of one page, with the fence's indentation removed."""
    relative = page.relative_to(root).as_posix()
    lines = page.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        words = opening["info"].split()
        body: list[str] = []
        first = index + 1  # 1-based number of the block's first line
        while index < len(lines):
            line = lines[index]
            index += 1
            if line.strip().startswith(fence) and not line.strip().strip("`"):
                break
            # Inside a list item the fence is indented: its code lines are, by as much.
            body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
        if words[:1] != ["python"]:
            continue
        attrs = dict(word.partition("=")[::2] for word in words[1:] if "=" in word)
        yield Block(
            relative,
            first,
            "\n".join(body) + "\n",
            run="no-run" not in words[1:],
            file=attrs.get("file"),
            dir=attrs.get("dir"),
        )


ALL_BLOCKS = [block for page in pages() for block in blocks_of(page)]


def steps_before(block: Block, blocks: list[Block] = ALL_BLOCKS) -> list[Block]:
    """The blocks of ``block.file`` on its page up to ``block`` included (or just ``block``)."""
    if block.file is None:
        return [block]
    same = [b for b in blocks if b.path == block.path and b.file == block.file]
    return same[: same.index(block) + 1]


def built_files(blocks: list[Block] = ALL_BLOCKS) -> dict[tuple[str, str], str]:
    """(page, file) -> the text its file= blocks make: joined by two blank lines."""
    parts: dict[tuple[str, str], list[str]] = {}
    for block in blocks:
        if block.file is not None:
            parts.setdefault((block.path, block.file), []).append(block.source.rstrip("\n"))
    return {key: "\n\n\n".join(texts) + "\n" for key, texts in parts.items()}


class _Run:
    """A block's process, its output in a temporary file (a pipe could fill up and stall)."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.output: IO[bytes] = tempfile.TemporaryFile()
        env = dict(os.environ)
        # A sample sees a clean environment: nothing of the developer's cluster or settings.
        for name in list(env):
            if name.startswith(("MLSOCKETS_", "WS_", "FLASK_")):
                del env[name]
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        folder = block.dir or (str(Path(block.file).parent) if block.file else None)
        spec = {
            "page": block.path,
            "file": str(ROOT / block.file) if block.file else block.path,
            "dir": str(ROOT / folder) if folder else None,
            "parts": [(step.line, step.source) for step in steps_before(block)],
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUNNER],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout kills what it started, too
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(spec).encode())
        self.process.stdin.close()

    def wait(self) -> tuple[int | None, str]:
        """The exit status (None: timed out and killed) and the output."""
        try:
            status: int | None = self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            status = None
        self.kill()
        self.output.seek(0)
        text = self.output.read().decode(errors="replace")
        self.output.close()
        return status, text

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


class _Runner:
    """Starts blocks a few ahead of the one being checked."""

    def __init__(self, blocks: list[Block]) -> None:
        self.order = [block for block in blocks if block.run]
        self.started: dict[Block, _Run] = {}

    def result(self, block: Block) -> tuple[int | None, str]:
        position = self.order.index(block)
        for ahead in self.order[position : position + AHEAD]:
            if ahead not in self.started:
                self.started[ahead] = _Run(ahead)
        return self.started.pop(block).wait()

    def close(self) -> None:
        for run in self.started.values():
            run.kill()
            run.output.close()
        self.started.clear()


@pytest.fixture(scope="module")
def runner() -> Iterator[_Runner]:
    running = _Runner(ALL_BLOCKS)
    yield running
    running.close()


def test_pages_have_samples() -> None:
    """The collector sees the pages (a broken fence parser would make every test vacuous)."""
    assert any(block.path == "README.md" for block in ALL_BLOCKS)
    assert sum(block.run for block in ALL_BLOCKS) >= 5


def test_fences_are_parsed(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n```python\nx = 1\n\nprint(x)\n```\n"
        "```sh\nls\n```\n"
        "1. a step:\n\n   ```python no-run\n   def f():\n       pass\n   ```\n"
        "````python\ns = '```'\n````\n",
        encoding="utf-8",
    )
    found = list(blocks_of(page, tmp_path))
    assert found == [
        Block("page.md", 3, "x = 1\n\nprint(x)\n", run=True),
        Block("page.md", 13, "def f():\n    pass\n", run=False),
        Block("page.md", 17, "s = '```'\n", run=True),
    ]


def test_file_steps_accumulate(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python file=a.py\nimport os\n```\n"
        "```python\nx = 1\n```\n"
        "```python file=a.py\nprint(os.sep)\n```\n",
        encoding="utf-8",
    )
    found = list(blocks_of(page, tmp_path))
    assert [b.file for b in found] == ["a.py", None, "a.py"]
    assert steps_before(found[2], found) == [found[0], found[2]]
    assert steps_before(found[1], found) == [found[1]]
    assert built_files(found) == {("page.md", "a.py"): "import os\n\n\nprint(os.sep)\n"}


def test_step_by_step_files_are_the_repository_files() -> None:
    """What a page builds in file= steps is, to the byte, the file the repository has (and
    that its own tests serve and run)."""
    for (page, file), text in built_files().items():
        path = ROOT / file
        assert path.is_file(), f"{page} builds {file}, which does not exist"
        actual = path.read_text(encoding="utf-8")
        if actual != text:
            diff = difflib.unified_diff(
                actual.splitlines(), text.splitlines(), file, f"{page} steps", lineterm=""
            )
            pytest.fail(f"{file} differs from the steps of {page}:\n" + "\n".join(diff))


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=[block.where for block in ALL_BLOCKS])
def test_sample_runs(block: Block, runner: _Runner) -> None:
    if not block.run:
        # Not run, but it must still be Python.
        try:
            compile(block.source, block.where, "exec")
        except SyntaxError as error:
            pytest.fail(f"{block.where}: no-run block is not valid Python: {error}")
        return
    status, output = runner.result(block)
    if status is None:
        pytest.fail(f"{block.where}: still running after {TIMEOUT:.0f} s\n{output}", pytrace=False)
    if status != 0:
        pytest.fail(f"{block.where}: exited with status {status}\n{output}", pytrace=False)
