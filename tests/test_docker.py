"""The deployment files: no engine runs here, so check what can be checked without one."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_has_postgres_api_worker_with_healthchecks() -> None:
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "api", "worker", "migrate"} <= set(services)
    for name in ("postgres", "api", "worker"):
        assert "healthcheck" in services[name], name
    anchor = compose["x-paywatch"]
    assert "../networks.yaml:/etc/paywatch/networks.yaml:ro" in anchor["volumes"]
    assert anchor["env_file"] == ".env" and (ROOT / "docker/example.env").exists()  # .env: untracked copy
    image = services["postgres"]["image"]
    assert re.match(r"postgres:\d+\.\d+-\w+$", image) or "@sha256:" in image  # a patch tag or a digest
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_dockerfile_is_pinned_non_root_and_installs_like_the_readme() -> None:
    text = (ROOT / "docker/Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert bases and all(re.match(r"python:\d+\.\d+\.\d+-slim", b) for b in bases)
    assert re.search(r"^USER paywatch$", text, flags=re.M)
    assert "pip install -q -c constraints.txt ." in text  # the Makefile's install, minus the dev extras
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose client is not installed on this machine",
)
def test_docker_compose_config_validates() -> None:
    env_file = ROOT / "docker/.env"  # the operator's untracked copy of example.env
    created = not env_file.exists()
    if created:
        env_file.write_text((ROOT / "docker/example.env").read_text())
    try:
        result = subprocess.run(
            ["docker", "compose", "-f", "docker/compose.yaml", "config", "-q"],
            cwd=ROOT, capture_output=True, text=True, env={"POSTGRES_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
        )
    finally:
        if created:
            env_file.unlink()
    assert result.returncode == 0, result.stderr
