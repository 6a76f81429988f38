"""Every ```python block of the documentation runs.

Each fenced block opened with ```python in ``docs/**/*.md`` and ``README.md`` is run in a
fresh process of this interpreter (the project's virtualenv), from the repository root, with a
timeout. A block opened with ```python no-run is only compiled: it needs something a sample
cannot bring along (a running deployment, a real Redis, your own models).

The block is compiled under the Markdown file's name and padded to its first line, so a
traceback names the page and the line in it. A block that needs a helper imports it from
``docs/_samples.py`` (the repository root is on ``sys.path``), so what a reader copies is what
runs.

Blocks are started a few at a time ahead of the test that checks them (the machine is
shared, and each block costs an interpreter start), and every process is killed and reaped,
also when a test fails.
"""

from __future__ import annotations

import dataclasses
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

# What the runner does in the child: compile the block under the page's name, padded so that
# line numbers are the page's, and run it as __main__ (a block may use if __name__ == ...).
_RUNNER = (
    "import sys\n"
    "path, first = sys.argv[1], int(sys.argv[2])\n"
    "source = sys.stdin.read()\n"
    "code = compile('\\n' * (first - 1) + source, path, 'exec')\n"
    "sys.argv = [path]\n"
    "exec(code, {'__name__': '__main__', '__file__': path})\n"
)


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: the page (relative to the root), the line of its first code line."""

    path: str
    line: int
    source: str
    run: bool

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
        yield Block(relative, first, "\n".join(body) + "\n", run="no-run" not in words[1:])


ALL_BLOCKS = [block for page in pages() for block in blocks_of(page)]


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
        self.process = subprocess.Popen(
            [sys.executable, "-c", _RUNNER, block.path, str(block.line)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: a timeout kills what it started, too
        )
        assert self.process.stdin is not None
        self.process.stdin.write(block.source.encode())
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
