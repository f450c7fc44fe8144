"""deploy/compose.yaml and deploy/k8s/timevault.yaml read into one model: containers with their
command, environment, mounts and ports, so tests can check them against the code and run them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")


@dataclass
class Mount:
    source: str
    """Compose: a host path (relative to deploy/) or a named volume; Kubernetes: the volume's name."""
    target: str
    read_only: bool = False
    kind: str = "bind"  # bind | volume | secret | configmap | pvc | emptydir
    items: dict[str, str] = field(default_factory=dict)
    """Kubernetes secret or configMap items: key → file name under the mount."""


@dataclass
class Container:
    name: str
    image: str
    command: list[str]
    env: dict[str, str]
    """Plain values (compose: interpolated; Kubernetes: ``value``)."""
    env_refs: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Kubernetes: variable → (secret or field, key)."""
    mounts: list[Mount] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    probes: list[tuple[str, int]] = field(default_factory=list)
    """(HTTP path, port) of every probe or health check."""
    replicas: int = 1
    raw: dict[str, Any] = field(default_factory=dict)


class MissingVariable(KeyError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = env.get(name)
        if value:
            return value
        if op == ":-":
            return arg
        if op == ":?" or value is None:
            raise MissingVariable(f"{name}: {arg or 'not set'}")
        return value

    return _VAR.sub(one, text)


def _deep(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [_deep(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _deep(v, env) for k, v in value.items()}
    return value


def compose_raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def compose(env: dict[str, str]) -> dict[str, Container]:
    """The compose services, interpolated with `env` (what .env would hold)."""
    raw = compose_raw()
    named = set(raw.get("volumes") or {})
    out: dict[str, Container] = {}
    for name, svc in raw["services"].items():
        svc = _deep(svc, env)
        mounts = []
        for spec in svc.get("volumes", []):
            parts = spec.split(":")
            source, target = parts[0], parts[1]
            kind = "volume" if source in named else "bind"
            mounts.append(Mount(source, target, len(parts) > 2 and "ro" in parts[2].split(","), kind))
        ports = [int(p.rsplit(":", 1)[1]) for p in svc.get("ports", [])]
        probes: list[tuple[str, int]] = []
        test = " ".join((svc.get("healthcheck") or {}).get("test", []))
        for m in re.finditer(r"http://127\.0\.0\.1:(\d+)(/[^'\" ]*)", test):
            probes.append((m.group(2), int(m.group(1))))
        out[name] = Container(name=name, image=svc["image"], command=list(svc["command"]),
                              env={k: str(v) for k, v in (svc.get("environment") or {}).items()},
                              mounts=mounts, ports=ports, probes=probes,
                              replicas=int((svc.get("deploy") or {}).get("replicas", 1)), raw=svc)
    return out


def k8s_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "timevault.yaml").read_text()) if d]


def k8s() -> dict[str, Container]:
    """Every container of the Deployments and the StatefulSet, by workload name."""
    out: dict[str, Container] = {}
    for doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for claim in doc["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {}}
        (c,) = pod["containers"]
        mounts = []
        for m in c.get("volumeMounts", []):
            vol = volumes[m["volumeName"] if "volumeName" in m else m["name"]]
            kind = next(k for k in ("secret", "configMap", "persistentVolumeClaim", "emptyDir") if k in vol)
            items = {i["key"]: i["path"] for i in (vol[kind].get("items") or [])} if kind in ("secret", "configMap") else {}
            mounts.append(Mount(m["name"], m["mountPath"], bool(m.get("readOnly")), kind.lower(), items))
        env, refs = {}, {}
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = str(e["value"])
            else:
                ref = e["valueFrom"]
                if "secretKeyRef" in ref:
                    refs[e["name"]] = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                else:
                    refs[e["name"]] = ("field", ref["fieldRef"]["fieldPath"])
        probes = [(p["httpGet"]["path"], p["httpGet"]["port"]) for key in ("livenessProbe", "readinessProbe")
                  if (p := c.get(key))]
        out[doc["metadata"]["name"]] = Container(
            name=doc["metadata"]["name"], image=c["image"], command=list(c.get("command") or c.get("args")),
            env=env, env_refs=refs, mounts=mounts, ports=[p["containerPort"] for p in c.get("ports", [])],
            probes=probes, replicas=int(doc["spec"].get("replicas", 1)), raw=doc)
    return out
