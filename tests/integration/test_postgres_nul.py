"""NUL characters in paths and query strings, against a real web server on PostgreSQL.

PostgreSQL can neither store nor compare a string holding NUL (``\\x00``): psycopg refuses to
send it, and the ORM raises ``ValueError`` from inside a query. SQLite compares it happily, so
only this database shows the 500s. Every URL of every face is asked with NUL in each string
path parameter and in each query parameter it reads; every answer must be a 4xx (or a normal
answer that ignored the parameter), never a 500.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.urls import URLPattern, URLResolver, get_resolver

from controlplane.lib.procutil import ManagedProcess, free_port
from tests.fixtures.common import VENV_BIN
from tests.fixtures.dashboard import PASSWORD
from tests.integration import test_postgres

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NUL = "a\x00b"
# The filter names the dashboard's lists and the Scrapyd face read from the query string.
FILTERS = [
    "q",
    "spider",
    "state",
    "node",
    "task",
    "project",
    "run",
    "actor",
    "area",
    "kind",
    "channel",
    "status",
    "job",
    "version",
    "tag",
    "cursor",
    "before",
    "after",
    "since",
    "until",
    "page",
    "offset",
    "limit",
    "order",
]
SEED = """
from django.contrib.auth import get_user_model
from controlplane.accounts.roles import set_role
from controlplane.accounts.tokens import create_token
user = get_user_model().objects.create_user("admin-user", password="{password}")
set_role(user, "admin")
token, secret = create_token("nul-admin", "admin")
print("SECRET=" + secret)
"""


def dashboard_paths() -> list[tuple[str, bool]]:
    """Every dashboard, Scrapyd-face and metrics URL with NUL in its string parameters; the
    flag says whether it has any (those are also POSTed, since their views look things up)."""
    found: list[tuple[str, bool]] = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + route)
            elif isinstance(pattern, URLPattern):
                full = (prefix + route).lstrip("^").rstrip("$")
                if full.startswith(("api/", "admin/")) or "(?P" in full:
                    continue
                has_str = bool(re.search(r"<(str|path):", full))
                path = re.sub(r"<int:\w+>", "1", full)
                path = re.sub(r"<(?:str|path|slug):\w+>", quote(NUL), path)
                found.append(("/" + path, has_str))

    walk(get_resolver("controlplane.urls").url_patterns, "")
    return found


@pytest.fixture
def pg_web(migrated_env: dict[str, str], tmp_path: Path, static_root: Path):
    """A real `crawlfleet web` on a migrated PostgreSQL database, with an admin user and token."""
    seed = SEED.format(password=PASSWORD)
    output = test_postgres._run(
        test_postgres._crawlfleet("manage", "shell", "-c", seed), migrated_env
    )
    secret = re.search(r"SECRET=(\S+)", output).group(1)
    port = free_port()
    web = ManagedProcess(
        "web-pg",
        [str(VENV_BIN / "crawlfleet"), "web", "--bind", f"127.0.0.1:{port}"],
        log_path=tmp_path / "web.log",
        env={**migrated_env, "CRAWLFLEET_STATIC_ROOT": str(static_root)},
    ).start()
    try:
        web.wait_for_port(port, timeout=90)
        yield f"http://127.0.0.1:{port}", secret, tmp_path / "web.log"
    finally:
        web.stop()


def logged_in(base: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/login/", timeout=30)
    answer = session.post(
        f"{base}/login/",
        data={
            "username": "admin-user",
            "password": PASSWORD,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": f"{base}/login/"},
        timeout=30,
    )
    assert answer.ok, answer.status_code
    assert "sessionid" in session.cookies
    return session


def rest_requests(schema: dict) -> list[tuple[str, str, dict[str, str]]]:
    """(method, path, query) for every REST operation, NUL in each string parameter."""
    calls = []
    for template, operations in schema["paths"].items():
        for method, operation in operations.items():
            path, query = template, {}
            for parameter in operation.get("parameters", []):
                kind = parameter.get("schema", {}).get("type", "string")
                value = "1" if kind == "integer" else NUL
                if parameter["in"] == "path":
                    path = path.replace("{" + parameter["name"] + "}", quote(value))
                elif parameter["in"] == "query" and kind != "integer":
                    query[parameter["name"]] = NUL
            calls.append((method.upper(), path, query))
    return calls


def test_nul_in_any_path_or_query_parameter_is_never_a_server_error(pg_web):
    base, secret, log = pg_web
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {secret}"
    schema = api.get(f"{base}/api/v1/openapi.json", timeout=30).json()
    server_errors = []
    calls = rest_requests(schema)
    assert len(calls) > 40  # every operation of the API, not a handful
    for method, path, query in calls:
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        answer = api.request(method, f"{base}{path}", params=query, timeout=30, **body)
        if answer.status_code >= 500:
            server_errors.append((method, path, query, answer.status_code))

    browser = logged_in(base)
    filters = dict.fromkeys(FILTERS, NUL)
    paths = dashboard_paths()
    assert any(path.startswith("/scrapyd/") for path, _ in paths)
    for path, has_str in paths:
        # The Scrapyd face authenticates with basic auth, the token as password.
        auth = ("scrapyd-client", secret) if path.startswith("/scrapyd/") else None
        answer = browser.get(f"{base}{path}", params=filters, auth=auth, timeout=30)
        if answer.status_code >= 500:
            server_errors.append(("GET", path, "filters", answer.status_code))
        if has_str:
            answer = browser.post(
                f"{base}{path}",
                data={"csrfmiddlewaretoken": browser.cookies["csrftoken"], "name": NUL},
                headers={"Referer": f"{base}/"},
                timeout=30,
            )
            if answer.status_code >= 500:
                server_errors.append(("POST", path, "form", answer.status_code))
    report = "\n".join(map(repr, server_errors))
    assert not server_errors, f"{report}\n{log.read_text()[-3000:]}"


def test_each_face_refuses_nul_in_its_own_envelope(pg_web):
    base, secret, _ = pg_web
    headers = {"Authorization": f"Bearer {secret}"}
    rest = requests.get(f"{base}/api/v1/projects/{quote(NUL)}", headers=headers, timeout=30)
    assert rest.status_code == 400
    assert rest.json()["error"]["code"] == "bad_request"
    assert "NUL" in rest.json()["error"]["message"]
    listed = requests.get(
        f"{base}/api/v1/jobs", params={"spider": NUL}, headers=headers, timeout=30
    )
    assert listed.status_code == 400
    assert "'spider'" in listed.json()["error"]["message"]
    page = logged_in(base).get(f"{base}/tasks/", params={"q": NUL}, timeout=30)
    assert page.status_code == 400
    assert "NUL" in page.text
    scrapyd = requests.get(
        f"{base}/scrapyd/listjobs.json",
        params={"project": NUL},
        auth=("scrapyd-client", secret),
        timeout=30,
    )
    assert "NUL" in scrapyd.json()["message"]
    assert scrapyd.json()["status"] == "error"
