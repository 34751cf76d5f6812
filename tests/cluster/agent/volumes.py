"""Pod volumes as host directories, and the in-pod paths they appear at.

emptyDir: a fresh directory per pod, deleted with the pod (container storage lives here,
on local disk). persistentVolumeClaim: the bound PersistentVolume's directory (hostPath or
local as given; an NFS volume through the agent's export table, since this machine has no
kernel NFS), shared by every pod that mounts it. secret / configMap: read through the API
as the node (the Node authorizer lets a node read only those its pods reference) into a
directory with one file per key (or `items` entry), mounted read-only like the kubelet
does. hostPath: the host path.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.cluster.agent.kubeapi import KubeApi, Obj
from tests.cluster.agent.runtime import Mount


class VolumeError(Exception):
    """MountVolume.SetUp failed: the pod waits in ContainerCreating (and may recover)."""


def _write_keys(
    target: Path,
    data: Mapping[str, bytes],
    items: list[dict[str, Any]] | None,
    mode: int,
    what: str,
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    chosen = (
        [(i["key"], i["path"], i.get("mode", mode)) for i in items]
        if items
        else [(key, key, mode) for key in data]
    )
    for key, rel, file_mode in chosen:
        if key not in data:
            raise VolumeError(f"{what} references non-existent {what} key: {key}")
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[key])
        path.chmod(file_mode)


async def set_up(
    volume: dict[str, Any],
    *,
    pod: Obj,
    pod_dir: Path,
    api: KubeApi,
    nfs_exports: Mapping[str, Path],
) -> tuple[Path, bool]:
    """Make one volume ready on the host: (host path, always read-only)."""
    name = volume["name"]
    namespace = pod["metadata"]["namespace"]
    if "projected" in volume:
        path = pod_dir / "volumes" / "kubernetes.io~projected" / name
        shutil.rmtree(path, ignore_errors=True)
        await _project(volume["projected"], path, pod=pod, api=api)
        return path, True
    if "emptyDir" in volume:
        path = pod_dir / "volumes" / "kubernetes.io~empty-dir" / name
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    if "persistentVolumeClaim" in volume:
        source = volume["persistentVolumeClaim"]
        path = await _claim_path(api, namespace, source["claimName"], nfs_exports)
        return path, bool(source.get("readOnly"))
    if "hostPath" in volume:
        return Path(volume["hostPath"]["path"]), False
    for field, key in (("secret", "secretName"), ("configMap", "name")):
        if field in volume:
            source = volume[field]
            kind = "secrets" if field == "secret" else "configmaps"
            obj = await api.get(f"/api/v1/namespaces/{namespace}/{kind}/{source.get(key, '')}")
            if obj is None:
                if source.get("optional"):
                    obj = {}
                else:
                    raise VolumeError(f'{field.lower()} "{source.get(key)}" not found')
            path = pod_dir / "volumes" / f"kubernetes.io~{field.lower()}" / name
            shutil.rmtree(path, ignore_errors=True)
            _write_keys(
                path,
                _data(obj),
                source.get("items"),
                source.get("defaultMode", 0o644),
                field.lower(),
            )
            return path, True
    raise VolumeError(f'volume "{name}": this test cluster does not support its type')


async def _project(source: Obj, target: Path, *, pod: Obj, api: KubeApi) -> None:
    """The service-account volume every pod gets (kube-api-access-*): a bound token from
    the TokenRequest API (nodes may ask only for pods bound to them), the cluster CA from
    the kube-root-ca.crt ConfigMap, and downward-API fields."""
    meta, mode = pod["metadata"], source.get("defaultMode", 0o644)
    namespace = meta["namespace"]
    target.mkdir(parents=True, exist_ok=True)
    for item in source.get("sources") or []:
        if "serviceAccountToken" in item:
            request = item["serviceAccountToken"]
            account = pod["spec"].get("serviceAccountName") or "default"
            answer = await api.create(
                f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "spec": {
                        "audiences": [request["audience"]] if request.get("audience") else None,
                        "expirationSeconds": request.get("expirationSeconds", 3607),
                        "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                           "name": meta["name"], "uid": meta["uid"]},
                    },
                },
            )
            _write_keys(target, {"token": answer["status"]["token"].encode()},
                        [{"key": "token", "path": request["path"]}], mode, "token")
        for field, kind in (("configMap", "configmaps"), ("secret", "secrets")):
            if field in item:
                ref = item[field]
                obj = await api.get(f"/api/v1/namespaces/{namespace}/{kind}/{ref['name']}")
                if obj is None and not ref.get("optional"):
                    raise VolumeError(f'{field.lower()} "{ref["name"]}" not found')
                _write_keys(target, _data(obj or {}), ref.get("items"), mode, field.lower())
        if "downwardAPI" in item:
            values = {"metadata.namespace": namespace, "metadata.name": meta["name"],
                      "metadata.uid": meta["uid"]}
            for entry in item["downwardAPI"].get("items") or []:
                field_path = (entry.get("fieldRef") or {}).get("fieldPath", "")
                _write_keys(target, {"v": values.get(field_path, "").encode()},
                            [{"key": "v", "path": entry["path"]}], mode, "downwardAPI")


async def _claim_path(
    api: KubeApi, namespace: str, claim: str, nfs_exports: Mapping[str, Path]
) -> Path:
    """The bound PersistentVolume's directory: hostPath/local as is, NFS through the
    agent's export table (SERVER:PATH -> host directory: no kernel NFS here)."""
    pvc = await api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
    if pvc is None:
        raise VolumeError(f'persistentvolumeclaim "{claim}" not found')
    volume_name = (pvc.get("spec") or {}).get("volumeName")
    if not volume_name or (pvc.get("status") or {}).get("phase") != "Bound":
        raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
    pv = await api.get(f"/api/v1/persistentvolumes/{volume_name}")
    if pv is None:
        raise VolumeError(f'persistentvolume "{volume_name}" not found')
    spec = pv["spec"]
    if "hostPath" in spec or "local" in spec:
        path = Path((spec.get("hostPath") or spec.get("local"))["path"])
    elif "nfs" in spec:
        export = f"{spec['nfs']['server']}:{spec['nfs']['path']}"
        if export not in nfs_exports:
            raise VolumeError(
                f"mount failed: exit status 32, mounting {export}: "
                "mount.nfs: Failed to resolve server: Name or service not known"
            )
        path = nfs_exports[export]
    else:
        raise VolumeError(f'persistentvolume "{volume_name}": this test cluster does not '
                          "support its type")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _data(obj: Obj) -> dict[str, bytes]:
    if obj.get("kind") == "Secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        return data
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


def container_mounts(
    container: dict[str, Any],
    volumes: Mapping[str, tuple[Path, bool]],
) -> list[Mount]:
    mounts = []
    for mount in container.get("volumeMounts") or []:
        source, always_ro = volumes[mount["name"]]
        if mount.get("subPath"):
            source = source / mount["subPath"]
            if not source.exists():
                source.mkdir(parents=True)
        mounts.append(
            Mount(source, mount["mountPath"], read_only=always_ro or bool(mount.get("readOnly")))
        )
    return mounts
