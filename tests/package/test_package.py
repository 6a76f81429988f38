"""The package as users install and import it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import mlsockets

ROOT = Path(__file__).resolve().parents[2]


def test_import_loads_no_gevent_flask_or_redis_and_patches_nothing() -> None:
    code = (
        "import json, socket, sys\n"
        "import mlsockets, mlsockets.protocol.connection, mlsockets.protocol.handshake\n"
        "import flask_mlsockets\n"
        "mods = sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'flask', 'redis'))\n"
        "print(json.dumps({'mods': mods, 'socket': socket.socket.__module__}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    result = json.loads(out.stdout)
    assert result == {"mods": [], "socket": "socket"}


def test_public_api_is_curated() -> None:
    assert sorted(mlsockets.__all__) == sorted(set(mlsockets.__all__))
    for name in mlsockets.__all__:
        assert getattr(mlsockets, name) is not None, name
    assert mlsockets.ServerOptions().max_message_size == 1 << 20


def test_version_is_exported() -> None:
    assert mlsockets.__version__.count(".") == 2


def test_wheel_contains_both_packages_and_the_browser_assets(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("mlsockets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mlsockets/__init__.py" in names
    assert "mlsockets/py.typed" in names
    assert "mlsockets/protocol/connection.py" in names
    assert "mlsockets/transport/gevent/handler.py" in names
    assert "mlsockets/static/mlsockets.js" in names
    assert "flask_mlsockets/__init__.py" in names
    assert "flask_mlsockets/py.typed" in names
    assert not any(name.startswith(("flask_ext/", "tests/", "benchmarks/")) for name in names)
