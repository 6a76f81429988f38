"""``mlsockets install``: the generated gunicorn.conf.py really serves the app under gunicorn,
the nginx site passes ``nginx -t`` (when nginx is installed), existing files are kept unless
``--force``, and bad input exits 2."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import ROOT, Processes, free_port, mlsockets, stderr, wait_for
from websockets.sync.client import connect


def install(into: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = mlsockets(
        "install", "examples.echo:app", "--into", str(into), "--server-name", "ws.test", *extra
    )
    return result


def test_generated_gunicorn_conf_serves_the_app(processes: Processes, tmp_path: Path) -> None:
    into = tmp_path / "deploy"
    port = free_port()
    done = install(into, "--workers", "1", "--bind", f"127.0.0.1:{port}", "--json")
    assert done.returncode == 0, done.stderr
    written = json.loads(done.stdout)["written"]
    assert sorted(Path(p).name for p in written) == [
        "examples-echo.nginx.conf",
        "examples-echo.service",
        "gunicorn.conf.py",
    ]
    unit = (into / "examples-echo.service").read_text()
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    assert f"ExecStart={gunicorn} -c {into / 'gunicorn.conf.py'}\n" in unit
    assert f"WorkingDirectory={ROOT}" in unit and "User=www-data" in unit
    # Run from elsewhere: the config names the app and the directory to import it from.
    proc = processes.start(gunicorn, "-c", str(into / "gunicorn.conf.py"), cwd=tmp_path)

    def echoes() -> bool:
        assert proc.poll() is None, stderr(proc)
        try:
            with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=5, proxy=None) as ws:
                ws.send("through gunicorn")
                return ws.recv(timeout=10) == "through gunicorn"
        except OSError:
            return False

    wait_for(echoes, 40, "gunicorn serving the app")
    assert "GeventWebSocketWorker" in stderr(proc) or "Booting worker" in stderr(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    into = tmp_path / "deploy"
    assert install(into).returncode == 0
    conf = into / "gunicorn.conf.py"
    conf.write_text("# mine\n")
    again = install(into, "--workers", "3")
    assert again.returncode == 2
    assert "not overwriting" in again.stderr and str(conf) in again.stderr
    assert "--force" in again.stderr
    assert conf.read_text() == "# mine\n"
    forced = install(into, "--workers", "3", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "workers = 3" in conf.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("install", "not a spec!", "--into", "x"), "expected module:app"),
        (("install", "examples.echo:app", "--into", "x", "--workers", "0"), "must be >= 1"),
        (("install", "examples.echo:app", "--into", "x", "--bind", "nowhere"), "HOST:PORT"),
        (("install", "examples.echo:app"), "--into"),  # argparse: required
    ],
)
def test_bad_input_exits_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = mlsockets(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_nginx_site_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    openssl = shutil.which("openssl")
    if nginx is None or openssl is None:
        pytest.skip("nginx (or openssl) is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=ws.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    into = tmp_path / "deploy"
    done = install(into, "--ssl-certificate", str(cert), "--ssl-certificate-key", str(key))
    assert done.returncode == 0, done.stderr
    site = into / "examples-echo.nginx.conf"
    (tmp_path / "logs").mkdir()
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
        f"events {{}}\nhttp {{\n    access_log off;\n    include {site};\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(main)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
