"""The REST API's OpenAPI schema, fuzzed against a real ``crawlfleet web``: no answer is a 5xx.

Schemathesis reads ``/api/v1/openapi.json`` from the running server and sends what the schema
allows and what it does not (examples, coverage of boundaries, random fuzzing, and chains of
calls), as an admin, so every operation runs past authentication. The only check is
``not_a_server_error``: a wrong input is the client's fault and must be answered with a 4xx in
the error envelope. Seeded and deterministic, so a failure reproduces.

Nothing can leave the machine: the web process's HTTP clients go through a proxy on a closed
loopback port (``NO_PROXY`` lets loopback through), node calls time out after a second, and
sending a test alert (whose whole point is reaching outside) is not fuzzed.
"""

from __future__ import annotations

import subprocess

import pytest

from controlplane.accounts.models import ApiToken
from controlplane.deploys.models import Project, Version
from controlplane.lib.procutil import free_port
from controlplane.nodes.models import Node
from tests.fixtures.common import VENV_BIN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SEED = 20261201
MAX_EXAMPLES = 8
PHASES = "examples,coverage,fuzzing,stateful"
# Sending a test alert exists to reach outside; revoking tokens would revoke the run's own.
NOT_FUZZED = r"/alerts/channels/\{channel_id\}/test$|/tokens/\{token_id\}/revoke$"


@pytest.fixture
def confined_env(cp_env: dict[str, str]) -> dict[str, str]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every outside call is refused
    cp_env.update(
        {
            "HTTP_PROXY": dead,
            "HTTPS_PROXY": dead,
            "ALL_PROXY": dead,
            "NO_PROXY": "127.0.0.1,localhost",
            "CRAWLFLEET_NODE_TIMEOUT": "1",
        }
    )
    return cp_env


@pytest.fixture
def seeded(transactional_db) -> dict[str, str]:
    """A project with a version and a node that answers nothing, so paths find rows."""
    project = Project.objects.create(name="crawler")
    version = Version.objects.create(
        project=project, version="100", egg=b"egg", sha256="0" * 64, size=3, spiders=["books"]
    )
    project.current_version = version
    project.save()
    node = Node.objects.create(name="gone", url=f"http://127.0.0.1:{free_port()}")
    # Half the operations take these in their path; random ones would only ever find nothing.
    return {"path.name": "crawler", "path.version": "100", "path.node_id": str(node.pk)}


def test_no_input_makes_the_api_answer_a_server_error(confined_env, seeded, cp_web, tmp_path):
    _token, secret = ApiToken.create("fuzzer", "admin")
    known = "\n".join(f'"{key}" = "{value}"' for key, value in seeded.items())
    (tmp_path / "schemathesis.toml").write_text(f"[parameters]\n{known}\n")
    command = [
        str(VENV_BIN / "schemathesis"),
        "run",
        f"{cp_web}/api/v1/openapi.json",
        "--url",
        cp_web,
        "--checks",
        "not_a_server_error",
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--exclude-path-regex",
        NOT_FUZZED,
        "--header",
        f"Authorization: Bearer {secret}",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "schemathesis"),
    ]
    env = {k: v for k, v in confined_env.items() if not k.endswith("_PROXY")}
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=200, env=env, check=False, cwd=tmp_path
    )
    # The tail names each failing operation with a curl line that reproduces it.
    assert proc.returncode == 0, proc.stdout[-20000:] + proc.stderr[-4000:]
