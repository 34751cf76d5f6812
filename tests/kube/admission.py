"""Defaulting and validation of Pods and Jobs, the part of admission a Job runner can trip on.

A real API server rejects a Job without `restartPolicy: Never|OnFailure`, a volumeMount
naming no volume, a bad label value or a duplicate container name with 422 Invalid, and
fills in the defaults (the Job's selector and pod labels, `terminationMessagePath`,
the not-ready/unreachable tolerations) that clients later read back. Reproducing that
much keeps the fake from accepting manifests a cluster would refuse.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

from tests.kube.store import JOBS, PODS, SECRETS, Kind, Obj, invalid

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
JOB_RESTART_POLICIES = ("OnFailure", "Never")
DEFAULT_TOLERATIONS = [
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
]
VOLUME_SOURCES = (
    "emptyDir",
    "persistentVolumeClaim",
    "secret",
    "configMap",
    "hostPath",
    "projected",
    "downwardAPI",
    "nfs",
)


def admit(kind: Kind, obj: Obj) -> None:
    """Default then validate; raises ApiError (422) like the API server."""
    if kind == SECRETS:  # stringData is write-only: stored base64-encoded in data
        data = obj.setdefault("data", {})
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(value.encode()).decode()
        obj.setdefault("type", "Opaque")
    elif kind == JOBS:
        _default_job(obj)
        _validate(kind, obj, obj["spec"]["template"]["spec"], "spec.template.spec")
    elif kind == PODS:
        spec = obj.setdefault("spec", {})
        _default_pod_spec(spec, is_template=False)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
        _validate(kind, obj, spec, "spec")


def _default_job(job: Obj) -> None:
    meta, spec = job["metadata"], job.setdefault("spec", {})
    template = spec.setdefault("template", {})
    template_meta = template.setdefault("metadata", {})
    labels = dict(template_meta.get("labels") or {})
    if labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    uid, name = meta["uid"], meta["name"]
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "job-name": name,
        }
    )
    template_meta["labels"] = labels
    spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    for field, value in (
        ("parallelism", 1),
        ("completions", 1),
        ("backoffLimit", 6),
        ("completionMode", "NonIndexed"),
        ("suspend", False),
        ("podReplacementPolicy", "TerminatingOrFailed"),
        ("manualSelector", None),
    ):
        if value is not None:
            spec.setdefault(field, value)
    _default_pod_spec(template.setdefault("spec", {}), is_template=True)
    job["status"] = {}


def _default_pod_spec(spec: dict[str, Any], *, is_template: bool) -> None:
    if not is_template:
        spec.setdefault("restartPolicy", "Always")
        tolerations = list(spec.get("tolerations") or [])
        for default in DEFAULT_TOLERATIONS:
            if not any(
                t.get("key") == default["key"] and t.get("effect") in (None, "NoExecute")
                for t in tolerations
            ):
                tolerations.append(dict(default))
        spec["tolerations"] = tolerations
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("priority", 0)
    for field, value in (
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
        ("terminationGracePeriodSeconds", 30),
        ("securityContext", {}),
        ("enableServiceLinks", True),
    ):
        spec.setdefault(field, value)
    for container in [*spec.get("initContainers", []), *spec.get("containers", [])]:
        image = str(container.get("image", ""))
        tag = image.rsplit("/", 1)[-1]
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
    for volume in spec.get("volumes", []):
        for source in ("secret", "configMap"):
            if source in volume:
                volume[source].setdefault("defaultMode", 0o644)


def qos_class(spec: dict[str, Any]) -> str:
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(res)
        and (r.get("requests") or r.get("limits") or {}).get(res)
        == (r.get("limits") or {}).get(res)
        for r in resources
        for res in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _validate(kind: Kind, obj: Obj, spec: dict[str, Any], at: str) -> None:
    name = obj["metadata"]["name"]
    errors = list(_metadata_errors(kind, obj))
    if kind == JOBS and spec.get("restartPolicy") not in JOB_RESTART_POLICIES:
        policy = spec.get("restartPolicy")
        errors.append(
            (
                f"{at}.restartPolicy",
                'Required value: valid values: "OnFailure", "Never"'
                if not policy
                else f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            )
        )
    errors += _spec_errors(spec, at)
    if errors:
        (field, detail), *more = errors
        raise invalid(kind, name, field, detail, more)


def _metadata_errors(kind: Kind, obj: Obj) -> Iterator[tuple[str, str]]:
    name = obj["metadata"]["name"]
    if not _DNS_SUBDOMAIN.match(name) or len(name) > 253:
        yield (
            "metadata.name",
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain '
            "must consist of lower case alphanumeric characters, '-' or '.'",
        )
    if kind == JOBS and len(name) > 63:
        yield ("metadata.name", f'Invalid value: "{name}": must be no more than 63 characters')
    label_sets = [("metadata.labels", obj["metadata"].get("labels") or {})]
    if kind == JOBS:
        template_labels = obj["spec"]["template"]["metadata"].get("labels") or {}
        label_sets.append(("spec.template.metadata.labels", template_labels))
    for where, labels in label_sets:
        for value in labels.values():
            if len(str(value)) > 63 or not _LABEL_VALUE.match(str(value)):
                yield (
                    where,
                    f'Invalid value: "{value}": a valid label must be an empty '
                    "string or consist of alphanumeric characters, '-', '_' or '.', and "
                    "must start and end with an alphanumeric character",
                )


def _spec_errors(spec: dict[str, Any], at: str) -> Iterator[tuple[str, str]]:
    volumes = spec.get("volumes") or []
    names = [v.get("name") for v in volumes]
    for index, volume in enumerate(volumes):
        if names.count(volume.get("name")) > 1:
            yield (f"{at}.volumes[{index}].name", f'Duplicate value: "{volume.get("name")}"')
        if sum(source in volume for source in VOLUME_SOURCES) != 1:
            yield (f"{at}.volumes[{index}]", "Required value: must specify a volume type")
    if not spec.get("containers"):
        yield (f"{at}.containers", "Required value")
    seen: set[str] = set()
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            where = f"{at}.{group}[{index}]"
            cname = container.get("name") or ""
            if not _DNS_LABEL.match(cname) or len(cname) > 63:
                yield (
                    f"{where}.name",
                    f'Invalid value: "{cname}": a lowercase RFC 1123 label '
                    "must consist of lower case alphanumeric characters or '-'",
                )
            elif cname in seen:
                yield (f"{where}.name", f'Duplicate value: "{cname}"')
            seen.add(cname)
            if not container.get("image"):
                yield (f"{where}.image", "Required value")
            for mount_index, mount in enumerate(container.get("volumeMounts") or []):
                if mount.get("name") not in names:
                    yield (
                        f"{where}.volumeMounts[{mount_index}].name",
                        f'Not found: "{mount.get("name")}"',
                    )
                if not mount.get("mountPath"):
                    yield (f"{where}.volumeMounts[{mount_index}].mountPath", "Required value")
