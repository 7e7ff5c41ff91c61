"""The OpenTelemetry Resource: who is emitting (service, host, process, Kubernetes pod).

Built from :class:`~obskit._config.settings.Settings` plus facts read from the environment
mapping and the files given as arguments, so tests can feed fake ones. Precedence,
lowest first: detected facts < ``resource_attributes`` (``OTEL_RESOURCE_ATTRIBUTES``)
< the explicit settings (``service_name``, ``service_version``, ``environment``).
"""

from __future__ import annotations

import os
import platform
import re
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.version import __version__ as otel_sdk_version

from obskit._config.settings import Settings
from obskit._version import __version__

#: Kubernetes downward-API variables read for each attribute, first found wins.
#: Set them in the pod spec with ``valueFrom.fieldRef`` (see docs/kubernetes.md).
K8S_ENV: Mapping[str, tuple[str, ...]] = {
    "k8s.pod.name": ("K8S_POD_NAME", "KUBERNETES_POD_NAME", "OTEL_RESOURCE_ATTRIBUTES_POD_NAME"),
    "k8s.namespace.name": ("K8S_NAMESPACE_NAME", "K8S_NAMESPACE", "KUBERNETES_NAMESPACE"),
    "k8s.node.name": (
        "K8S_NODE_NAME",
        "KUBERNETES_NODE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES_NODE_NAME",
    ),
    "k8s.pod.uid": ("K8S_POD_UID", "KUBERNETES_POD_UID", "OTEL_RESOURCE_ATTRIBUTES_POD_UID"),
}
#: Mounted into every pod with a service account; holds the namespace name.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CGROUP_FILES = (Path("/proc/self/cgroup"), Path("/proc/self/mountinfo"))

_CONTAINER_ID = re.compile(r"(?<![0-9a-f])([0-9a-f]{64})(?![0-9a-f])")


def build_resource(
    settings: Settings,
    environ: Mapping[str, str],
    *,
    argv: Sequence[str] | None = None,
    cgroup_files: Sequence[Path] = CGROUP_FILES,
    namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE,
) -> Resource:
    """Return the Resource for ``settings``, with detected host/process/k8s facts."""
    attributes: dict[str, str | int] = {
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": otel_sdk_version,
        "telemetry.distro.name": "obskit",
        "telemetry.distro.version": __version__,
        "host.name": socket.gethostname(),
        "host.arch": platform.machine().lower(),
        "os.type": sys.platform,
        "process.pid": os.getpid(),
        "process.executable.name": Path(sys.executable).name,
        "process.runtime.name": sys.implementation.name,
        "process.runtime.version": platform.python_version(),
        "process.runtime.description": sys.version.replace("\n", " "),
        "service.name": _script_name(sys.argv if argv is None else argv),
    }
    attributes.update(kubernetes_attributes(environ, namespace_file))
    container = container_id(cgroup_files)
    if container:
        attributes["container.id"] = container
    attributes.update(settings.resource_attributes)
    explicit = {
        "service.name": settings.service_name,
        "service.version": settings.service_version,
        "deployment.environment.name": settings.environment,
    }
    attributes.update({key: value for key, value in explicit.items() if value})
    return Resource(attributes)


def _script_name(argv: Sequence[str]) -> str:
    script = Path(argv[0]).name if argv and argv[0] else ""
    if not script or script in ("-c", "-m", "-"):
        return "unknown_service:python"
    return script.removesuffix(".py")


def kubernetes_attributes(environ: Mapping[str, str], namespace_file: Path) -> dict[str, str]:
    """Pod, namespace, node and uid from downward-API variables (see :data:`K8S_ENV`)."""
    found: dict[str, str] = {}
    for attribute, variables in K8S_ENV.items():
        for var in variables:
            value = environ.get(var, "").strip()
            if value:
                found[attribute] = value
                break
    in_cluster = bool(environ.get("KUBERNETES_SERVICE_HOST"))
    if in_cluster and "k8s.pod.name" not in found and environ.get("HOSTNAME"):
        # A pod's hostname is its name unless the spec overrides it.
        found["k8s.pod.name"] = environ["HOSTNAME"]
    if in_cluster and "k8s.namespace.name" not in found:
        namespace = _read(namespace_file).strip()
        if namespace:
            found["k8s.namespace.name"] = namespace
    return found


def container_id(files: Sequence[Path]) -> str | None:
    """The 64-hex container id from cgroup v1 (``cgroup``) or v2 (``mountinfo``) files."""
    for path in files:
        for line in _read(path).splitlines():
            # mountinfo lists the container's own /etc/hostname etc. under its id;
            # other 64-hex strings on unrelated mounts are not the container.
            if path.name == "mountinfo" and "/containers/" not in line and "/docker/" not in line:
                continue
            match = _CONTAINER_ID.search(line)
            if match:
                return match.group(1)
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
