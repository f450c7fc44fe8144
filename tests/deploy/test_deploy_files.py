"""deploy/ read line by line against the code, without Docker: every NATS config passes
``nats-server -t``, every Kubernetes manifest validates offline against the Kubernetes schemas,
and every command, module, flag, environment variable, port and path they name exists."""

from __future__ import annotations

import ast
import importlib
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy import manifests
from tests.deploy.manifests import DEPLOY, Container
from tests.deploy.support import localize, nats_check, nats_passwords, write_tls
from timevault.services.common import identities, logs
from timevault.services.common.natsd import NatsServer

ROOT = DEPLOY.parent
SECRETS = {**nats_passwords(), "TIMEVAULT_TOKEN": "t" * 32}
NATS_USERS = (*identities.SERVICES, identities.OPERATOR)


def _k8s_configmap() -> dict[str, str]:
    (doc,) = [d for d in manifests.k8s_documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config"]
    data: dict[str, str] = doc["data"]
    return data


def _nats_node_args(container: Container) -> list[str]:
    assert container.command[0] == "nats-server"
    return container.command[1:]


# --- NATS configurations ----------------------------------------------------------------------


@pytest.mark.parametrize("source", ["deploy/nats", "k8s ConfigMap"])
def test_nats_config_passes_nats_server_t(source: str, tmp_path: Path) -> None:
    files = ({name: (DEPLOY / "nats" / name).read_text() for name in ("nats.conf", "users.conf")}
             if source == "deploy/nats" else _k8s_configmap())
    tls = write_tls(tmp_path / "tls", "localhost")
    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    for name, text in files.items():
        (conf_dir / name).write_text(localize(text, tls, tmp_path / "store"))
    node = manifests.k8s()["nats"] if source != "deploy/nats" else manifests.compose(SECRETS)["nats-1"]
    args = _nats_node_args(node)
    args = args[args.index("--routes"):]  # the node's own flags, after its config file
    result = nats_check(conf_dir / "nats.conf", {**SECRETS, "NATS_SERVER_NAME": "n1"}, *args)
    assert result.returncode == 0 and "is valid" in result.stderr + result.stdout, result.stderr


def test_nats_config_of_up_passes_nats_server_t(tmp_path: Path) -> None:
    users = {u: f"tv{u}pw" for u in NATS_USERS}
    server = NatsServer(tmp_path / "nats", users=users)
    conf = server._config()
    env = {identities.password_env(u): p for u, p in users.items()}
    result = nats_check(conf, env)
    assert result.returncode == 0, result.stderr
    assert not any(p in conf.read_text() for p in users.values())  # passwords come by environment


def test_k8s_configmap_is_deploy_nats_verbatim() -> None:
    data = _k8s_configmap()
    assert data == {name: (DEPLOY / "nats" / name).read_text() for name in ("nats.conf", "users.conf")}


# --- Kubernetes schemas, offline -------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.29.0", "1.33.0"])
def test_k8s_manifests_validate_offline(version: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kubernetes-validate ships the Kubernetes JSON schemas; any network use fails this test."""
    from kubernetes_validate import utils as kv

    def no_network(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("kubernetes-validate tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    documents = manifests.k8s_documents()
    assert {d["kind"] for d in documents} >= {"Namespace", "ConfigMap", "Service", "StatefulSet", "Deployment",
                                             "PersistentVolumeClaim"}
    for doc in documents:
        kv.validate(doc, version, strict=True)  # raises ValidationError naming the field


# --- every name in compose and k8s exists in the code ------------------------------------------


def _env_names_read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in ("services", "shared", "proto"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and re.fullmatch(r"(TIMEVAULT|AWS)_[A-Z0-9_]+", node.value):
                    names.add(node.value)
    # natsauth reads <NAME>_FILE for every secret it reads as <NAME>.
    names |= {f"{n}_FILE" for n in ("TIMEVAULT_NATS_PASSWORD", "TIMEVAULT_NATS_TOKEN")}
    return names


ENV_READ = _env_names_read_by_code()
AWS_CHAIN = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"}


def _timevault(containers: dict[str, Container]) -> dict[str, Container]:
    return {n: c for n, c in containers.items() if c.command[:2] == ["python", "-m"]}


def _all() -> list[tuple[str, str, Container]]:
    out = [("compose", n, c) for n, c in _timevault(manifests.compose(SECRETS)).items()]
    return out + [("k8s", n, c) for n, c in _timevault(manifests.k8s()).items()]


def _under_mount(path: str, container: Container) -> bool:
    for mount in container.mounts:
        if path == mount.target or path.startswith(mount.target.rstrip("/") + "/"):
            if mount.items:  # a secret or configMap with chosen items: the file must be one of them
                return path[len(mount.target):].lstrip("/") in mount.items.values()
            return True
    return False


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


@pytest.mark.parametrize(("where", "name", "container"), _all(), ids=lambda v: v if isinstance(v, str) else "")
def test_service_commands_env_ports_and_paths_exist(where: str, name: str, container: Container) -> None:
    module = container.command[2]
    assert module == f"timevault.services.{name}", module
    main = importlib.import_module(f"{module}.__main__")
    args = container.command[3:]
    main.parser().parse_args(args)  # every flag and value is accepted (SystemExit otherwise)

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container.image == f"timevault:{version}"
    if where == "k8s":
        pod = container.raw["spec"]["template"]["spec"]
        assert pod["containers"][0]["imagePullPolicy"] == "IfNotPresent"
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["fsGroup"] == 10001

    env = {**container.env, **{k: "<secret>" for k in container.env_refs}}
    unknown = sorted(k for k in env if k not in ENV_READ and k not in AWS_CHAIN)
    assert not unknown, f"{where} {name}: the code reads no {unknown}"
    assert env["TIMEVAULT_NATS_USER"] == name  # its own identity
    assert env["TIMEVAULT_LOG_FORMAT"] in logs.FORMATS
    assert "TIMEVAULT_NATS_PASSWORD" in env or "TIMEVAULT_NATS_PASSWORD_FILE" in env
    if where == "k8s":
        assert "TIMEVAULT_NATS_PASSWORD" not in env  # a file, not a variable
        secret = next(m for m in container.mounts if env["TIMEVAULT_NATS_PASSWORD_FILE"].startswith(m.target))
        assert secret.kind == "secret" and list(secret.items) == [name]  # its own password only
    else:
        assert env["TIMEVAULT_NATS_PASSWORD"] == SECRETS[identities.password_env(name)]

    # NATS: the servers named exist, on the client port of nats.conf; streams replicated to all.
    nats_conf = (DEPLOY / "nats" / "nats.conf").read_text()
    client_port = int(re.search(r"^port: (\d+)", nats_conf, re.M)[1])  # type: ignore[index]
    nodes = _nats_nodes(where)
    urls = env["TIMEVAULT_NATS"].split(",")
    assert {u.split("://")[1] for u in urls} == {f"{n}:{client_port}" for n in nodes}
    assert all(u.startswith("tls://") for u in urls)
    assert int(env["TIMEVAULT_STREAM_REPLICAS"]) == len(nodes)

    # Paths named in flags and variables lie on a mounted volume.
    paths = [v for v in (env.get("TIMEVAULT_NATS_CA"), env.get("TIMEVAULT_DATA_DIR"),
                         env.get("TIMEVAULT_NATS_PASSWORD_FILE"), _flag(args, "--db"), _flag(args, "--data-dir"),
                         _flag(args, "--restore-root"))
             if v]
    for path in paths:
        assert _under_mount(path, container), f"{where} {name}: {path} is on no volume"
    if name in ("catalog", "snapshotter", "uploader", "restorer"):  # they open repositories
        assert "AWS_ACCESS_KEY_ID" in env or container.raw.get("spec", {}).get("template", {}).get("spec", {}) \
            .get("containers", [{}])[0].get("envFrom"), f"{where} {name}: no S3 credentials"
        if where == "compose":
            assert _under_mount("/backups", container), f"{name} needs the backups volume"

    # Ports: what it listens on is what its probes and published ports use.
    listen = _flag(args, "--listen") or _flag(args, "--health-listen")
    assert listen is not None, f"{where} {name}: no probe endpoint"
    port = int(listen.rsplit(":", 1)[1])
    assert container.probes and all(p == port for _, p in container.probes)
    probe_paths = {path for path, _ in container.probes}
    assert probe_paths <= ({"/api/v1/health", "/api/v1/ready"} if name == "gateway" else {"/healthz", "/readyz"})
    if where == "k8s":
        assert container.ports == [port]
    if name == "gateway" and where == "compose":
        assert container.ports == [port]

    # No secret on a command line.
    assert not any("$" in a or "PASSWORD" in a or "@" in a for a in container.command)


def _nats_nodes(where: str) -> list[str]:
    if where == "compose":
        return [n for n, c in manifests.compose(SECRETS).items() if c.command[0] == "nats-server"]
    nats = manifests.k8s()["nats"]
    return [f"nats-{i}.nats" for i in range(nats.replicas)]


@pytest.mark.parametrize("where", ["compose", "k8s"])
def test_nats_nodes_match_their_config(where: str) -> None:
    containers = manifests.compose(SECRETS) if where == "compose" else manifests.k8s()
    nodes = [c for c in containers.values() if c.command[0] == "nats-server"]
    names = _nats_nodes(where)
    conf = (DEPLOY / "nats" / "nats.conf").read_text()
    cluster_port = int(re.search(r"cluster \{[^}]*?port: (\d+)", conf, re.S)[1])  # type: ignore[index]
    for node in nodes:
        args = _nats_node_args(node)
        assert args[:2] == ["--config", "/etc/nats/config/nats.conf"]
        assert _under_mount("/etc/nats/config/nats.conf", node)
        routes = _flag(args, "--routes")
        assert routes is not None
        assert routes.split(",") == [f"nats://{n}:{cluster_port}" for n in names]
        for path in re.findall(r"(/etc/nats/tls/[\w.]+|/data/jetstream)", conf):
            assert _under_mount(path, node), path
        if where == "k8s":
            assert node.env_refs["NATS_SERVER_NAME"] == ("field", "metadata.name")
            wanted = {identities.password_env(u): ("timevault-nats", u) for u in NATS_USERS}
            assert {k: v for k, v in node.env_refs.items() if k != "NATS_SERVER_NAME"} == wanted
            service = next(d for d in manifests.k8s_documents() if d["kind"] == "Service"
                           and d["metadata"]["name"] == "nats")
            assert {p["port"] for p in service["spec"]["ports"]} == {4222, cluster_port, 8222}
        else:
            assert node.env["NATS_SERVER_NAME"] == node.name
            assert node.raw["env_file"] == [".env"]  # every NATS_<USER>_PASSWORD
    assert len(nodes if where == "compose" else names) == 3
    users = (DEPLOY / "nats" / "users.conf").read_text()
    assert set(re.findall(r"\$(NATS_\w+_PASSWORD)", users)) == {identities.password_env(u) for u in NATS_USERS}


def test_compose_volumes_and_files_exist() -> None:
    raw = manifests.compose_raw()
    for name, container in manifests.compose(SECRETS).items():
        for mount in container.mounts:
            if mount.kind == "volume":
                assert mount.source in raw["volumes"], (name, mount.source)
            elif mount.source.startswith("./") and not mount.source.startswith("./tls"):
                assert (DEPLOY / mount.source).exists(), (name, mount.source)  # ./tls is the operator's
    assert manifests.compose(SECRETS)["catalog"].replicas == 1
    assert all(manifests.compose(SECRETS)[n].replicas == 2 for n in ("scheduler", "snapshotter", "uploader"))
    with pytest.raises(manifests.MissingVariable):  # a missing password is an error, not an empty one
        manifests.compose({})


def test_k8s_gateway_service_and_catalog_volume() -> None:
    docs = manifests.k8s_documents()
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "gateway")
    assert service["spec"]["ports"][0]["targetPort"] == 7480
    catalog = manifests.k8s()["catalog"].raw
    assert catalog["spec"]["strategy"] == {"type": "Recreate"} and catalog["spec"]["replicas"] == 1
    claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    volumes = catalog["spec"]["template"]["spec"]["volumes"]
    assert {v["persistentVolumeClaim"]["claimName"] for v in volumes if "persistentVolumeClaim" in v} <= claims


def test_dockerfile_and_dockerignore() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.M)  # pinned, not a moving tag
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), name
    assert "USER 10001" in text
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*" and "!shared/" in ignore and "!LICENSE" in ignore
    assert "Apache License" in (ROOT / "LICENSE").read_text()
