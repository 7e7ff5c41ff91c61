"""The Resource: service identity, host/process facts, Kubernetes and container ids."""

from __future__ import annotations

import os
from pathlib import Path

from obskit._config.settings import load
from obskit._traces.resource import build_resource, container_id, kubernetes_attributes

NO_FILES: tuple[Path, ...] = ()


def _resource(environ: dict[str, str], overrides: dict[str, object] | None = None, **kw: object):  # type: ignore[no-untyped-def]
    settings = load(environ, overrides or {})
    return build_resource(settings, environ, cgroup_files=NO_FILES, **kw).attributes  # type: ignore[arg-type]


def test_service_name_defaults_to_the_script_name() -> None:
    """Without a name, service.name is the script's name (unknown_service:python for -c)."""
    assert _resource({}, argv=["/srv/app/worker.py"])["service.name"] == "worker"
    assert _resource({}, argv=["-c"])["service.name"] == "unknown_service:python"
    assert _resource({}, argv=[])["service.name"] == "unknown_service:python"


def test_explicit_settings_win_over_resource_attributes() -> None:
    """service_name/version/environment beat the same keys in OTEL_RESOURCE_ATTRIBUTES."""
    environ = {
        "OTEL_RESOURCE_ATTRIBUTES": (
            "service.name=env,service.version=0,deployment.environment.name=x,a=b"
        ),
        "OTEL_SERVICE_NAME": "svc",
    }
    attributes = _resource(environ, {"service_version": "9", "environment": "prod"})
    assert attributes["service.name"] == "svc"
    assert attributes["service.version"] == "9"
    assert attributes["deployment.environment.name"] == "prod"
    assert attributes["a"] == "b"
    only_attrs = _resource({"OTEL_RESOURCE_ATTRIBUTES": "service.name=from-attrs"})
    assert only_attrs["service.name"] == "from-attrs"


def test_process_host_and_sdk_attributes_are_present() -> None:
    """process.pid, process.runtime.*, host.name and telemetry.sdk.* are detected."""
    attributes = _resource({})
    assert attributes["process.pid"] == os.getpid()
    assert attributes["process.runtime.name"] == "cpython"
    assert attributes["process.runtime.version"].count(".") == 2
    assert attributes["host.name"]
    assert attributes["telemetry.sdk.name"] == "opentelemetry"
    assert attributes["telemetry.sdk.language"] == "python"
    assert "k8s.pod.name" not in attributes
    assert "container.id" not in attributes


def test_kubernetes_downward_api_variables_are_read(tmp_path: Path) -> None:
    """Pod, namespace, node and uid come from the documented downward-API variables."""
    environ = {
        "K8S_POD_NAME": "web-7d9f-abcde",
        "K8S_NAMESPACE_NAME": "shop",
        "KUBERNETES_NODE_NAME": "node-3",
        "K8S_POD_UID": "1b2c-uid",
    }
    attributes = _resource(environ, namespace_file=tmp_path / "absent")
    assert attributes["k8s.pod.name"] == "web-7d9f-abcde"
    assert attributes["k8s.namespace.name"] == "shop"
    assert attributes["k8s.node.name"] == "node-3"
    assert attributes["k8s.pod.uid"] == "1b2c-uid"


def test_in_cluster_fallbacks_use_hostname_and_service_account(tmp_path: Path) -> None:
    """In a pod without the variables, HOSTNAME is the pod and the SA file the namespace."""
    namespace = tmp_path / "namespace"
    namespace.write_text("payments\n")
    environ = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOSTNAME": "api-5c-xyz"}
    assert kubernetes_attributes(environ, namespace) == {
        "k8s.pod.name": "api-5c-xyz",
        "k8s.namespace.name": "payments",
    }
    assert kubernetes_attributes({"HOSTNAME": "laptop"}, namespace) == {}


CID = "a" * 12 + "0123456789abcdef" * 3 + "b" * 4


def test_container_id_from_cgroup_v1(tmp_path: Path) -> None:
    """A docker/containerd cgroup v1 line yields the 64-hex container id."""
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(f"12:pids:/kubepods/burstable/pod1/{CID}\n1:name=systemd:/\n")
    assert container_id([cgroup]) == CID


def test_container_id_from_cgroup_v2_mountinfo(tmp_path: Path) -> None:
    """With cgroup v2 the id is found in the container's own mounts in mountinfo."""
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/\n")
    mountinfo = tmp_path / "mountinfo"
    other = "f" * 64
    mountinfo.write_text(
        f"100 90 0:50 /volumes/{other} /data rw - ext4 /dev/sda1 rw\n"
        f"101 90 254:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 x rw\n"
    )
    assert container_id([cgroup, mountinfo]) == CID
    assert container_id([tmp_path / "missing"]) is None
