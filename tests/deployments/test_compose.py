"""docker/compose.yaml, checked without a Docker engine (the image: test_dockerfile.py).

Debian's ``docker-compose`` (1.29) validates and interpolates the file, ``check-jsonschema``
checks it against the compose-spec schema, and the tests below check what neither does:
loopback-only ports, secrets that must be given, pinned images, health-gated start order,
MLflow's allowed hosts, nothing installed at container start, and options and settings the
installed Prefect and MLflow know. Missing tools fail with how to install them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from ecocompress.flows.stack import database_urls
from tests.deployments.dockerfile import INSTALL, PYPROJECT, dockerfile, image_entrypoint

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
REQUIRED = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")
SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|AUTH", re.IGNORECASE)
DURATION = re.compile(r"^(\d+(\.\d+)?(h|m|s|ms|us|ns))+$")
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def raw_text() -> str:
    return COMPOSE.read_text()


def required_vars() -> list[str]:
    return sorted({m["name"] for m in VAR.finditer(raw_text()) if m["op"] in (":?", "?")})


def stack_env(**overrides: str | None) -> dict[str, str]:
    """A clean environment with every required variable set to a test value."""
    prefixes = ("POSTGRES_", "ECOCOMPRESS_", "MLFLOW_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update({name: f"test-{name.lower()}" for name in required_vars()})
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution (the subset this file uses), for the invariant
    checks; docker-compose itself checks the real thing below."""

    def sub(m: re.Match) -> str:
        name, op, arg = m["name"], m["op"], m["arg"]
        got = env.get(name)
        if op in (":?", "?") and not (got if op == ":?" else got is not None):
            raise KeyError(f"{name}: {arg}")
        if op in (":-", "-") and not (got if op == ":-" else got is not None):
            return arg
        return got or ""

    return VAR.sub(sub, value).replace("$$", "$")


def resolve(node, env):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [resolve(x, env) for x in node]
    if isinstance(node, dict):
        return {k: resolve(v, env) for k, v in node.items()}
    return node


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(raw_text())  # safe_load resolves the `<<` merge keys


@pytest.fixture(scope="module")
def services(raw) -> dict[str, dict]:
    return resolve(raw["services"], stack_env())


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def argv(value) -> list[str]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else shlex.split(value)


def tool(name: str, install: str) -> str:
    here = Path(sys.executable).parent / name  # the venv's own scripts first
    path = str(here) if here.exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: install it with `{install}` (CI installs it)")
    return path


def compose_config(env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    exe = tool("docker-compose", "apt-get install -y --no-install-recommends docker-compose")
    # an empty env file: a developer's docker/.env must not decide the outcome
    (tmp / "empty.env").write_text("")
    return subprocess.run(
        [exe, "--env-file", str(tmp / "empty.env"), "-f", str(COMPOSE), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- the tools -----------------------------------------------------------------------


def test_docker_compose_accepts_the_file(tmp_path):
    r = compose_config(stack_env(), tmp_path)
    assert r.returncode == 0, r.stderr


def test_docker_compose_refuses_an_unset_secret(tmp_path):
    name = required_vars()[0]
    r = compose_config(stack_env(**{name: None}), tmp_path)
    assert r.returncode != 0
    assert name in r.stderr and "docker/.env" in r.stderr, r.stderr


def test_compose_spec_schema():
    exe = tool("check-jsonschema", "pip install check-jsonschema  (the dev extra)")
    r = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


# --- invariants of the parsed file ---------------------------------------------------


def test_published_ports_are_loopback_only(services):
    published = 0
    for name, svc in services.items():
        assert svc.get("network_mode") != "host", f"{name}: network_mode host"
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).rsplit(":", 2)
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip in LOOPBACK, f"{name}: port {port!r} is published on all interfaces"
            published += 1
    assert published >= 3  # Prefect, MLflow, the webhook receiver


def urls_in(value: str) -> list[tuple[str, dict[str, str]]]:
    """The URLs in a raw value, with each ``${...}`` replaced by a token (their messages
    hold spaces), and the tokens' original text."""
    tokens = {}

    def keep(m: re.Match) -> str:
        tokens[f"v{len(tokens)}x"] = m.group(0)
        return f"v{len(tokens) - 1}x"

    return [(u, tokens) for u in re.findall(r"[a-z+]+://[^\s\"']+", VAR.sub(keep, value))]


def test_secrets_must_be_given(raw):
    """Every secret is `${NAME:?message}`: no default, no literal, no empty value."""
    checked = 0
    for name, svc in raw["services"].items():
        for key, value in environment(svc).items():
            if SECRET_KEY.search(key):
                assert REQUIRED.match(value), f"{name}: {key}={value!r} is not ${{NAME:?...}}"
                checked += 1
            for url, tokens in urls_in(value):
                password = urlsplit(url).password
                if password is not None:
                    assert REQUIRED.match(tokens.get(password, password)), (
                        f"{name}: {key} has a literal password"
                    )
                    checked += 1
    assert checked >= 10  # 5 secrets, 5 URLs with a password
    # and nothing in the file gives one a default
    for m in VAR.finditer(raw_text()):
        if SECRET_KEY.search(m["name"]):
            assert m["op"] == ":?", f"${{{m['name']}}} must use :? (no default, no empty)"


def test_env_example_documents_every_variable():
    example = (DOCKER / ".env.example").read_text()
    documented = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    used = {m["name"] for m in VAR.finditer(raw_text())}
    assert used == set(documented), f"undocumented {used - set(documented)}"
    for name in required_vars():
        assert documented[name] == "", f"{name} must be empty in .env.example (no shared secret)"
    assert not (DOCKER / ".env").exists() or ".env" in (REPO / ".gitignore").read_text()


def test_images_are_pinned(raw, services):
    version = PYPROJECT["project"]["version"]
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image tag"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag, f"{name}: {image} has no tag"
        if "build" in svc:
            assert tag == version, f"{name}: the project image is tagged {tag}, not {version}"
        else:
            # major.minor at least: `latest`, `15` or `3-python3.11` float
            assert re.match(r"^\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
    built = {svc["image"] for svc in services.values() if "build" in svc}
    assert len(built) == 1, f"one project image, got {built}"


def test_start_order_is_health_gated(services):
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc and not hc.get("disable") and hc.get("test"), f"{name}: no health check"
        assert hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: {hc['test']}"
        for key in ("interval", "timeout", "start_period"):  # no schema checks these
            assert DURATION.match(str(hc.get(key, "0s"))), f"{name}: {key} {hc.get(key)!r}"
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must name a condition per service"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond.get("condition") == "service_healthy", f"{name} -> {dep}: {cond}"
            assert services[dep].get("healthcheck"), f"{dep} has no health check"


def test_project_image_health_checks_use_the_baked_script(services):
    copied = " ".join(a for i, a in dockerfile() if i == "COPY")
    for name, svc in services.items():
        if "build" in svc:
            test = svc["healthcheck"]["test"]
            assert test[:2] == ["CMD", "ecocompress-healthcheck"], f"{name}: {test}"
    assert "docker/healthcheck.py /usr/local/bin/ecocompress-healthcheck" in copied


def test_nothing_installs_at_container_start(services):
    for name, svc in services.items():
        words = argv(svc.get("entrypoint")) + argv(svc.get("command"))
        words += [str(w) for w in svc["healthcheck"]["test"]]
        text = " ".join(words)
        assert not INSTALL.search(text), f"{name} installs at start: {text}"


def test_mlflow_accepts_the_names_the_stack_calls_it_by(services):
    ml = services["mlflow"]
    args = argv(ml["entrypoint"]) + argv(ml["command"])
    opt = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args if a.startswith("--") and "=" in a}
    allowed = opt["--allowed-hosts"].split(",")
    assert "mlflow" in allowed and "mlflow:5000" in allowed
    # every client's MLFLOW_TRACKING_URI, and the health check's Host header
    callers = [
        urlsplit(environment(s)["MLFLOW_TRACKING_URI"]).netloc
        for s in services.values()
        if "MLFLOW_TRACKING_URI" in environment(s)
    ]
    assert callers, "no service calls MLflow"
    hc = [a for a in ml["healthcheck"]["test"] if a.startswith("--host=")]
    for host in callers + [h.split("=", 1)[1] for h in hc]:
        assert host in allowed, f"MLflow refuses Host {host}: --allowed-hosts {allowed}"
    assert "--serve-artifacts" in args
    mounts = [v.split(":")[1] for v in ml.get("volumes", [])]
    assert opt["--artifacts-destination"] in mounts, "MLflow artifacts are not on a volume"
    env = environment(ml)
    assert env["MLFLOW_WEBHOOK_ALLOWED_SCHEMES"].split(",") == ["http", "https"]
    assert env["MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS"] == "true"


def test_databases_are_the_ones_stack_py_names(services):
    """Prefect on database NAME (asyncpg), MLflow on NAME_mlflow (psycopg2), as
    flows/stack.py database_urls() gives them for one PostgreSQL URL."""
    prefect_url = environment(services["prefect"])["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    expected = database_urls(prefect_url)
    assert prefect_url == expected["prefect"]
    assert environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"] == expected["mlflow"]
    pg = environment(services["postgres"])
    parts = urlsplit(prefect_url)
    assert (parts.username, parts.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert parts.path.strip("/") == pg["POSTGRES_DB"]


def test_initdb_creates_the_mlflow_database(tmp_path, services):
    """The init script run with a fake psql: it asks for the database stack.py names."""
    (tmp_path / "psql").write_text(
        '#!/bin/sh\nprintf "%s\\n" "$@" > "$FAKE_OUT.args"\ncat > "$FAKE_OUT.sql"\n'
    )
    (tmp_path / "psql").chmod(0o755)
    scripts = sorted((DOCKER / "initdb").glob("*.sh"))
    assert scripts, "docker/initdb has no script"
    pg = environment(services["postgres"])
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "POSTGRES_USER": pg["POSTGRES_USER"],
        "POSTGRES_DB": pg["POSTGRES_DB"],
        "FAKE_OUT": str(tmp_path / "out"),
    }
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script.name} must be executable"
        subprocess.run(["bash", str(script)], env=env, check=True, timeout=30)
    mlflow_db = urlsplit(environment(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"]).path
    args = (tmp_path / "out.args").read_text().splitlines()
    assert f"--set=db={mlflow_db.strip('/')}" in args
    assert "-v" in args and "ON_ERROR_STOP=1" in args
    assert 'CREATE DATABASE :"db"' in (tmp_path / "out.sql").read_text()


def test_state_is_on_volumes(raw, services):
    home = next(a for i, a in dockerfile() if i == "ENV" and "ECOCOMPRESS_HOME=" in a)
    home = re.search(r"ECOCOMPRESS_HOME=(\S+)", home).group(1)
    named = set(raw.get("volumes", {}))
    for name in ("worker", "webhooks"):
        mounts = {v.split(":")[1]: v.split(":")[0] for v in services[name]["volumes"]}
        assert mounts.get(home) in named, f"{name}: ECOCOMPRESS_HOME {home} is not on a volume"
    pg_mounts = [v.split(":")[1] for v in services["postgres"]["volumes"]]
    assert "/var/lib/postgresql/data" in pg_mounts


def test_receiver_and_worker_have_their_settings(services):
    hooks = environment(services["webhooks"])
    for key in ("ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET", "ECOCOMPRESS_HF_WEBHOOK_SECRET"):
        assert hooks.get(key), f"webhooks: {key} missing"
    for name in ("worker", "webhooks"):
        url = urlsplit(environment(services[name])["PREFECT_API_URL"])
        assert url.hostname in services and url.path == "/api", f"{name}: {url.geturl()}"
    # every URL that names a host names a service of this file (or the published loopback)
    for name, svc in services.items():
        for key, value in environment(svc).items():
            for url in re.findall(r"[a-z+]+://[^\s\"']+", value):
                host = urlsplit(url).hostname
                assert host in services or host in LOOPBACK, f"{name}: {key} -> {host}"


# --- the commands the file runs exist -------------------------------------------------


def _installed_source(dist: str, relpath: str) -> str:
    spec = importlib.util.find_spec(dist)  # top-level find_spec imports nothing
    assert spec and spec.submodule_search_locations, f"{dist} is not installed"
    return (Path(next(iter(spec.submodule_search_locations))) / relpath).read_text()


def test_mlflow_and_prefect_options_exist(services):
    """Options and environment variables the file gives MLflow and Prefect's CLI are
    spelled as the installed versions spell them (read from their source: no import)."""
    ml_cli = _installed_source("mlflow", "cli/__init__.py")
    ml_cli += _installed_source("mlflow", "utils/cli_args.py")
    ml_env = _installed_source("mlflow", "environment_variables.py")
    for a in argv(services["mlflow"]["command"]):
        if a.startswith("--"):
            opt = a.split("=", 1)[0]
            assert re.search(f'"{opt}["/]', ml_cli), f"mlflow server has no {opt}"
    for key in environment(services["mlflow"]):
        if key.startswith("MLFLOW_"):
            assert f'"{key}"' in ml_cli + ml_env, f"mlflow reads no {key}"
    pf_cli = _installed_source("prefect", "cli/server.py")
    for name in ("prefect", "prefect-services"):
        for a in argv(services[name]["command"]):
            if a.startswith("--"):
                assert f'"{a}"' in pf_cli, f"prefect server has no {a}"


def test_redis_modules_named_in_prefect_settings_exist(services):
    spec = importlib.util.find_spec("prefect_redis")
    if spec is None:
        pytest.fail("prefect-redis not installed: pip install 'ecocompress[compose]'")
    root = Path(next(iter(spec.submodule_search_locations))).parent
    for key, value in environment(services["prefect"]).items():
        if value.startswith("prefect_redis."):
            assert (root / (value.replace(".", "/") + ".py")).is_file(), f"{key}={value}"


def test_worker_command_parses(services):
    """Project-image services without their own entrypoint run `ecocompress ...`: each
    command must parse with the real CLI (deployments/cli.py)."""
    from ecocompress.deployments.cli import build_parser

    assert image_entrypoint() == ["ecocompress"]
    ran = 0
    for name, svc in services.items():
        if "build" in svc and "entrypoint" not in svc:
            args = argv(svc["command"])
            try:
                build_parser().parse_args(args)
            except SystemExit:
                pytest.fail(f"{name}: `ecocompress {' '.join(args)}` does not parse")
            ran += 1
    assert ran >= 1


def test_receiver_module_exists(services):
    entry = argv(services["webhooks"]["entrypoint"])
    assert entry[:2] == ["python", "-m"]
    assert importlib.util.find_spec(entry[2]), f"webhooks: no module {entry[2]}"


# --- Prefect reads every PREFECT_* variable the file sets (imports Prefect: slow) ------


@pytest.mark.slow
def test_prefect_reads_every_prefect_variable(services):
    """Prefect ignores unknown PREFECT_* variables silently: each one set here must be a
    setting of the installed Prefect or prefect-redis (the names Prefect itself checks
    profiles against)."""
    code = (
        "import json\n"
        "from prefect.settings import Settings\n"
        "from prefect.settings.legacy import _get_valid_setting_names as names\n"
        "from prefect_redis.client import RedisMessagingSettings\n"
        "print(json.dumps(sorted(names(Settings) | names(RedisMessagingSettings))))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    known = set(json.loads(r.stdout.splitlines()[-1]))
    assert "PREFECT_API_URL" in known
    for name, svc in services.items():
        for key in environment(svc):
            if key.startswith("PREFECT_"):
                assert key in known, f"{name}: Prefect has no setting {key}"
