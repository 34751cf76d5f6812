"""Object state with the API server's bookkeeping, kept in kmock's own object store.

kmock 0.8 stores each object's history (`KubernetesEmulator.objects`) but gives objects no
uid, resourceVersion or creationTimestamp, ignores `generateName`, and deletes at once
(no finalizers, no garbage collection of dependents). This class adds exactly that on top
of the same store: one increasing resourceVersion for the whole cluster, a change log that
watches replay from any resourceVersion, finalizers with `deletionTimestamp`, and the
three propagation policies (the garbage collector that acts on them is a controller in
`agent.py`, as in a real cluster).

Everything here runs on the server's event loop thread only; methods are synchronous, so
a mutation and its change-log entry are atomic without locks.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import secrets
import string
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import kmock

from tests.kube.selectors import Predicate

Obj = dict[str, Any]
_ALNUM = string.ascii_lowercase + string.digits
GENERATE_NAME_MAX_PREFIX = 58  # the API server cuts the prefix so prefix + 5 fits in 63


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How error messages name the resource: `jobs.batch`, `pods`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


PODS = Kind("", "v1", "pods", "Pod")
EVENTS = Kind("", "v1", "events", "Event")
SECRETS = Kind("", "v1", "secrets", "Secret")
CONFIGMAPS = Kind("", "v1", "configmaps", "ConfigMap")
CLAIMS = Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
NODES = Kind("", "v1", "nodes", "Node", namespaced=False)
NAMESPACES = Kind("", "v1", "namespaces", "Namespace", namespaced=False)
JOBS = Kind("batch", "v1", "jobs", "Job")
KINDS = {
    (k.group, k.version, k.plural): k
    for k in (PODS, EVENTS, SECRETS, CONFIGMAPS, CLAIMS, NODES, NAMESPACES, JOBS)
}


class ApiError(kmock.KubernetesError):
    """A failure rendered as the API server's `Status` (kmock renders KubernetesError)."""


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{kind.qualified} "{name}" not found',
        {"name": name, "group": kind.group, "kind": kind.plural},
    )


def conflict(kind: Kind, name: str, message: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": {message}',
        {"name": name, "group": kind.group, "kind": kind.plural},
    )


def now_rfc3339() -> str:
    """metav1.Time: seconds precision, UTC, `Z`."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(length))


@dataclass(frozen=True)
class Change:
    """One entry of the change log: what a watch starting before `rv` must replay."""

    rv: int
    kind: Kind
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj
    old: Obj | None


class Store:
    def __init__(self, objects: kmock.ObjectsArray) -> None:
        self._objects = objects
        self._rv = 0
        self.changes: list[Change] = []
        self._changed = asyncio.Event()

    # --- reading -------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def changed(self) -> asyncio.Event:
        """An event set by the next mutation (take it before reading, then wait on it)."""
        return self._changed

    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        key = (kind.resource, namespace if kind.namespaced else None, name)
        if key not in self._objects or self._objects[key].deleted:
            return None
        return copy.deepcopy(self._objects[key].raw)

    def require(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self.get(kind, namespace, name)
        if obj is None:
            raise not_found(kind, name)
        return obj

    def list(
        self, kind: Kind, namespace: str | None = None, where: Predicate | None = None
    ) -> list[Obj]:
        found = []
        for (resource, ns, _), stored in self._objects.items():
            if resource != kind.resource or stored.deleted:
                continue
            if kind.namespaced and namespace is not None and ns != namespace:
                continue
            obj = stored.raw
            if where is None or where(obj):
                found.append(copy.deepcopy(obj))
        return sorted(
            found, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])
        )

    # --- writing -------------------------------------------------------------------

    def create(
        self,
        kind: Kind,
        namespace: str | None,
        body: Obj,
        admit: Callable[[Kind, Obj], None] | None = None,
    ) -> Obj:
        """Create like the API server; `admit` defaults and validates the named object."""
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        namespace = namespace if kind.namespaced else None
        if kind.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does "
                    "not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
            if self.get(NAMESPACES, None, namespace or "") is None:
                raise not_found(NAMESPACES, namespace or "")
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    kind, "", "metadata.name", "Required value: name or generateName is required"
                )
            prefix = prefix[:GENERATE_NAME_MAX_PREFIX]
            meta["name"] = next(
                prefix + s
                for s in iter(random_suffix, None)
                if self.get(kind, namespace, prefix + s) is None
            )
        elif self.get(kind, namespace, meta["name"]) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{kind.qualified} "{meta["name"]}" already exists',
                {"name": meta["name"], "group": kind.group, "kind": kind.plural},
            )
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(transient, None)
        if admit is not None:
            admit(kind, obj)
        return self._write(kind, namespace, meta["name"], obj, old=None)

    def replace(self, kind: Kind, obj: Obj, *, expect_rv: str | None = None) -> Obj:
        """Store a whole new version (the agent's status writes, PUT, PATCH results)."""
        meta = obj["metadata"]
        namespace, name = meta.get("namespace"), meta["name"]
        old = self.require(kind, namespace, name)
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise conflict(
                kind,
                name,
                "the object has been modified; please apply your "
                "changes to the latest version and try again",
            )
        for fixed in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and old["metadata"].get("deletionGracePeriodSeconds", 0) == 0
        ):
            return self._remove(kind, namespace, name, obj)
        return self._write(kind, namespace, name, obj, old=old)

    def mutate(
        self, kind: Kind, namespace: str | None, name: str, change: Callable[[Obj], None]
    ) -> Obj | None:
        """Read-modify-write in one step; None if the object is gone."""
        obj = self.get(kind, namespace, name)
        if obj is None:
            return None
        before = copy.deepcopy(obj)
        change(obj)
        return obj if obj == before else self.replace(kind, obj)

    def delete(
        self,
        kind: Kind,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        grace_s: int | None = None,
        preconditions: dict[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Delete like the API server; returns (object, removed now)."""
        obj = self.require(kind, namespace, name)
        meta = obj["metadata"]
        for field, value in (preconditions or {}).items():
            if value and meta.get(field) != value:
                raise conflict(kind, name, f"Precondition failed: {field.upper()}: {value}")
        if meta.get("deletionTimestamp"):
            if grace_s != 0:
                return obj, False
            if not meta.get("finalizers"):
                return self._remove(kind, namespace, name, obj), True
            meta["deletionGracePeriodSeconds"] = 0  # confirmed: gone once finalizers are
            return self._write(
                kind, namespace, name, obj, old=self.get(kind, namespace, name)
            ), False
        if propagation is None:
            # batch/v1 Jobs keep the legacy default: their pods are orphaned, not deleted.
            propagation = "Orphan" if kind == JOBS else "Background"
        finalizers = list(meta.get("finalizers") or [])
        if propagation == "Foreground":
            finalizers.append("foregroundDeletion")
        elif propagation == "Orphan":
            finalizers.append("orphan")
        grace = 0
        if (
            kind == PODS
            and (obj.get("spec") or {}).get("nodeName")
            and (obj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ):
            grace = (
                grace_s
                if grace_s is not None
                else obj["spec"].get("terminationGracePeriodSeconds", 30)
            )
        if not finalizers and grace == 0:
            return self._remove(kind, namespace, name, obj), True
        meta.update(
            deletionTimestamp=now_rfc3339(),
            deletionGracePeriodSeconds=grace,
            finalizers=sorted(set(finalizers), key=finalizers.index),
        )
        return self._write(kind, namespace, name, obj, old=self.get(kind, namespace, name)), False

    def remove_finalizer(
        self, kind: Kind, namespace: str | None, name: str, finalizer: str
    ) -> None:
        def drop(obj: Obj) -> None:
            obj["metadata"]["finalizers"] = [
                f for f in obj["metadata"].get("finalizers") or [] if f != finalizer
            ]

        self.mutate(kind, namespace, name, drop)

    # --- internals -----------------------------------------------------------------

    def _write(
        self, kind: Kind, namespace: str | None, name: str, obj: Obj, old: Obj | None
    ) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = (kind.resource, namespace, name)
        if key in self._objects:
            self._objects[key].history.append(copy.deepcopy(obj))
        else:
            self._objects[key] = copy.deepcopy(obj)
        self._log(
            Change(self._rv, kind, "ADDED" if old is None else "MODIFIED", copy.deepcopy(obj), old)
        )
        return obj

    def _remove(self, kind: Kind, namespace: str | None, name: str, obj: Obj) -> Obj:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[(kind.resource, namespace, name)].delete()
        self._log(Change(self._rv, kind, "DELETED", copy.deepcopy(obj), None))
        return obj

    def _log(self, change: Change) -> None:
        self.changes.append(change)
        self._changed.set()
        self._changed = asyncio.Event()


def invalid(
    kind: Kind, name: str, field: str, detail: str, more: Iterable[tuple[str, str]] = ()
) -> ApiError:
    """422 Invalid, worded like the API server's field errors."""
    causes = [(field, detail), *more]
    text = ", ".join(f"{f}: {d}" for f, d in causes)
    qualified = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    return ApiError(
        422,
        "Invalid",
        f'{qualified} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": kind.group,
            "kind": kind.kind,
            "causes": [{"field": f, "message": d} for f, d in causes],
        },
    )
