"""Run fuzz targets for a while, and merge what they found into the committed corpus.

Usage::

    .venv/bin/python fuzz/run.py <target>|all [seconds] [--merge] [--out DIR]

Each target runs for ``seconds`` (default 60) with libFuzzer's limits set (``-max_len``,
``-rss_limit_mb``, ``-timeout``). It first replays its committed corpus
(``fuzz/corpus/<target>/``) and its regressions (``fuzz/regressions/<target>/``), then
mutates; new inputs go to ``DIR/<target>/new/``, a crashing input to
``DIR/<target>/crash-<sha1>`` (also ``oom-``, ``timeout-``), the log to
``DIR/fuzz-<target>.log``. ``DIR`` is ``fuzz/out/`` unless told (it is git-ignored).
With ``--merge``, inputs that add coverage are then copied into the committed corpus
(libFuzzer's ``-merge=1``). Exit status: 0 when every target ran clean, else 1, after
printing the reproducer paths.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
sys.path.insert(0, str(FUZZ))

from harnesses import TARGETS  # noqa: E402 - the path is set just above

#: Largest input per target: a frame stream needs room for a deflated message with a few
#: control frames; a token is at most ~5.5 KB; a head needs > 100 short lines.
MAX_LEN = {
    "frames": 16384,
    "handshake": 4096,
    "headers": 8192,
    "envelope_json": 4096,
    "envelope_msgpack": 4096,
    "relay": 4096,
    "tokens": 8192,
}
#: libFuzzer re-executes a target (``-merge=1``) by its path: the scripts start with
#: ``#!/usr/bin/env python3``, so this interpreter's directory goes first on PATH.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
RSS_LIMIT_MB = 1024  # python with atheris starts near 100 MB; a leak or a bomb gets far past
TIMEOUT_S = 10  # per input; the largest inputs take milliseconds
#: libFuzzer dictionaries (fuzz/dicts/): tokens the C parsers (json, zlib) give no feedback on.
DICTS = {
    "handshake": "http.dict",
    "headers": "http.dict",
    "envelope_json": "json.dict",
    "relay": "json.dict",
    "tokens": "json.dict",
}


def command(target: str, seconds: float, out: Path) -> list[str]:
    """The libFuzzer command line that fuzzes ``target`` for ``seconds``."""
    new = out / target / "new"
    new.mkdir(parents=True, exist_ok=True)
    dirs = [new] + [
        d for d in (FUZZ / "corpus" / target, FUZZ / "regressions" / target) if d.is_dir()
    ]
    return [
        sys.executable,
        str(FUZZ / f"fuzz_{target}.py"),
        f"-max_len={MAX_LEN[target]}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-timeout={TIMEOUT_S}",
        f"-max_total_time={max(1, round(seconds))}",
        f"-artifact_prefix={out / target}/",
        "-print_final_stats=1",
        *([f"-dict={FUZZ / 'dicts' / DICTS[target]}"] if target in DICTS else []),
        *map(str, dirs),
    ]


def summary(target: str, log: Path) -> str:
    """One line from a run's log: executions, speed, coverage and corpus at the end."""
    text = log.read_text(errors="replace")
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", text)
    rate = re.findall(r"average_exec_per_sec:\s+(\d+)", text)
    rss = re.findall(r"peak_rss_mb:\s+(\d+)", text)
    if not done:
        return f"{target}: no DONE line in {log}"
    runs, cov, ft, files, size = done[-1]
    # The plateau: the execution at which cov and ft first reached their final values.
    cov_at = re.search(rf"#(\d+)\s+\w+\s+cov: {cov} ", text)
    ft_at = re.search(rf"#(\d+)\s+\w+\s+cov: \d+ ft: {ft} ", text)
    return (
        f"{target}: {runs} executions ({rate[-1] if rate else '?'}/s), cov {cov} ft {ft}, "
        f"corpus {files} inputs / {size}, peak RSS {rss[-1] if rss else '?'} MB; "
        f"last new cov at #{cov_at.group(1) if cov_at else '?'}, "
        f"last new ft at #{ft_at.group(1) if ft_at else '?'}"
    )


def merge(target: str, out: Path, log: Path) -> int:
    """Copy the new inputs that add coverage into ``fuzz/corpus/<target>/``."""
    corpus = FUZZ / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        str(FUZZ / f"fuzz_{target}.py"),
        "-merge=1",
        f"-max_len={MAX_LEN[target]}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-timeout={TIMEOUT_S}",
        str(corpus),
        str(out / target / "new"),
    ]
    with log.open("a") as stream:
        return subprocess.run(cmd, stdout=stream, stderr=subprocess.STDOUT, env=ENV).returncode


def run(target: str, seconds: float, out: Path, *, do_merge: bool = False) -> bool:
    """Fuzz one target; return whether it ran clean (reproducers are printed)."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / f"fuzz-{target}.log"
    print(f"fuzzing {target} for {seconds:g} s; log: {log}", flush=True)
    started = time.time()
    with log.open("w") as stream:
        rc = subprocess.run(
            command(target, seconds, out), stdout=stream, stderr=subprocess.STDOUT, env=ENV
        ).returncode
    found = sorted(
        p
        for p in (out / target).iterdir()
        if p.name.startswith(("crash-", "oom-", "timeout-")) and p.stat().st_mtime >= started
    )
    for path in found:
        print(f"{target}: reproducer {path}", flush=True)
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print(f"{target}: libFuzzer exited with {rc}:", *tail, sep="\n", flush=True)
        return False
    print(summary(target, log), flush=True)
    if do_merge:
        merge(target, out, log)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("seconds", nargs="?", type=float, default=60.0)
    parser.add_argument("--merge", action="store_true", help="merge new inputs into the corpus")
    parser.add_argument("--out", type=Path, default=FUZZ / "out", help="where output goes")
    args = parser.parse_args(argv)
    targets = TARGETS if args.target == "all" else (args.target,)
    clean = [run(t, args.seconds, args.out.resolve(), do_merge=args.merge) for t in targets]
    return 0 if all(clean) else 1


if __name__ == "__main__":
    sys.exit(main())
