"""The CLI imports what a command needs when it runs: ``paywatch --help`` loads no configuration,
database or chain library, and ``paywatch status`` (a monitoring check) no chain client.

Each check runs the real entry point in a fresh interpreter and reads its ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_NETWORKS

ROOT = Path(__file__).resolve().parent.parent

#: Run ``paywatch ARGS`` as ``python -m paywatch`` does, then write the top-level packages imported.
PROBE = """
import json, sys
from paywatch.cli import app
try:
    app(prog_name="paywatch", args=sys.argv[2:])
except SystemExit as exc:
    code = exc.code
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, out)
"""

CHAIN_CLIENTS = {"web3", "eth_account", "eth_abi", "tronpy", "requests", "fastapi", "starlette", "uvicorn"}


def imported(tmp_path: Path, *args: str, **env: str) -> tuple[int, set[str]]:
    result = tmp_path / "modules.json"
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PAYWATCH_")}
    run_env.update(env, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(result), *args], env=run_env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    body = json.loads(result.read_text())
    return body["code"], set(body["modules"])


def test_help_imports_no_service(tmp_path: Path) -> None:
    code, modules = imported(tmp_path, "--help")
    assert code == 0
    heavy = CHAIN_CLIENTS | {"sqlalchemy", "sqlmodel", "alembic", "pydantic", "bip_utils", "httpx", "yaml"}
    assert modules & heavy == set()
    assert "typer" in modules  # the probe did run the CLI


def test_status_imports_no_chain_client(tmp_path: Path) -> None:
    networks = tmp_path / "networks.yaml"
    networks.write_text(TEST_NETWORKS)
    code, modules = imported(
        tmp_path,
        "status",
        "--json",
        PAYWATCH_DATABASE_URL=f"sqlite:///{tmp_path / 'paywatch.sqlite'}",
        PAYWATCH_NETWORKS=str(networks),
    )
    assert code == 0  # a fresh database: nothing stalled
    assert modules & CHAIN_CLIENTS == set()
    assert {"sqlalchemy", "alembic"} <= modules  # it did read the (migrated) database
