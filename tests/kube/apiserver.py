"""The Kubernetes API of the test cluster: kmock's emulator with the gaps that matter fixed.

kmock 0.8 parses requests, routes them, renders `Status` errors, serves discovery and
keeps object histories. As a Kubernetes API it lacks what a Job runner relies on (see
design.md, "Known pitfalls"), so this subclass keeps kmock's request handling and store
but answers the Kubernetes actions itself, through `Store`:

- create: `generateName`, uid, resourceVersion, creationTimestamp, defaults, 422 Invalid;
- list/watch: `labelSelector`, `fieldSelector`; watch accepts `watch=true|True|1`, replays
  from `resourceVersion`, streams ADDED/MODIFIED/DELETED as they happen and ends after
  `timeoutSeconds`;
- delete: `propagationPolicy` (Background/Foreground/Orphan) and graceful pod deletion;
- patch/put: merge, strategic-merge (as merge) and JSON patch; the `status` subresource;
- pods/log: the container's lines as text/plain (see `logs.py`).

kmock's emulator mutates its store before routing (so even an injected error response
would create the object); here nothing changes unless the Kubernetes handler runs, so a
test can inject faults with ordinary kmock reactions, e.g.
`server[kmock.method.POST, kmock.resource("batch/v1/jobs")][:1] << 500`.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
from kmock._internal import rendering

from tests.kube import admission
from tests.kube.logs import LogQuery, LogStore, stream_log
from tests.kube.selectors import Predicate, SelectorError, field_predicate, label_predicate
from tests.kube.store import KINDS, PODS, ApiError, Change, Kind, Obj, Store

DEFAULT_WATCH_TIMEOUT_S = 1800  # the API server's --min-request-timeout
PEER_CHECK_S = 1.0  # how often an idle watch notices a client that went away
TRUTHY = ("true", "True", "1")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge is treated the same: lists replace)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge(result.get(key), value)
    return result


@attrs.define(kw_only=True)
class KubeApiServer(kmock.KubernetesEmulator):
    """kmock's emulator serving real Kubernetes semantics from `store` and `logs`."""

    store: Store = attrs.field(init=False)
    logs: LogStore = attrs.field(init=False, factory=LogStore)
    closing: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()  # kmock's fallbacks, bound to the overrides below
        self.store = Store(self.objects)
        for kind in KINDS.values():
            info = self.resources[kind.resource]
            info.kind, info.namespaced = kind.kind, kind.namespaced
            info.verbs = {"create", "delete", "get", "list", "patch", "update", "watch"}
            info.subresources = {"log", "status"} if kind == PODS else {"status"}
        json_type = kmock.headers({"Content-Type": "application/json"})
        text_type = kmock.headers({"Content-Type": "text/plain; charset=utf-8"})
        preferred = self.fallback**1  # above kmock's own fallbacks, below test reactions
        preferred[self._is_watch] << json_type << self._serve_watch
        preferred[kmock.method.GET, kmock.subresource("log")] << text_type << self._serve_log
        preferred[kmock.method.PUT] << self._serve_replace

    def end_streams(self) -> None:
        """Before the HTTP server stops: finish every watch and log stream promptly
        (aiohttp would otherwise wait up to 60 s for them)."""
        self.closing = True
        self.logs.finish_all()

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # Skip KubernetesEmulator._handle: it writes to the store before any reaction runs.
        return await kmock.KubernetesScaffold._handle(self, request)

    # --- request helpers -----------------------------------------------------------

    @staticmethod
    def _is_watch(request: kmock.Request) -> bool:
        return request.method == kmock.method.GET and request.params.get("watch") in TRUTHY

    @staticmethod
    def _kind(request: kmock.Request) -> Kind:
        res = request.resource
        kind = KINDS.get((res.group, res.version, res.plural)) if res is not None else None
        if kind is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return kind

    @staticmethod
    def _predicate(request: kmock.Request) -> Predicate:
        try:
            labels = label_predicate(request.params.get("labelSelector"))
            fields = field_predicate(request.params.get("fieldSelector"))
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from None
        name = request.name
        return lambda obj: (
            labels(obj) and fields(obj) and (name is None or obj["metadata"]["name"] == name)
        )

    @staticmethod
    def _body(request: kmock.Request) -> Any:
        try:
            return json.loads(request.body or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not JSON") from None

    # --- the Kubernetes actions ----------------------------------------------------

    async def _serve_list(self, request: kmock.Request) -> rendering.Payload:
        kind = self._kind(request)
        items = self.store.list(kind, request.namespace, self._predicate(request))
        metadata: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        try:  # limit/continue: pages by position; the token is opaque to clients anyway
            start = int(base64.urlsafe_b64decode(request.params.get("continue") or "MA=="))
            limit = int(request.params.get("limit") or 0)
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid limit or continue token") from None
        if limit > 0:
            rest = items[start + limit :]
            items = items[start : start + limit]
            if rest:
                metadata.update(
                    remainingItemCount=len(rest),
                    **{"continue": base64.urlsafe_b64encode(str(start + limit).encode()).decode()},
                )
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": metadata,
            "items": items,
        }

    async def _serve_server_version(self, request: kmock.Request) -> rendering.Payload:
        # kmock answers v1.26 (k3s); the behaviour here is that of 1.31.
        return {
            "major": "1",
            "minor": "31",
            "gitVersion": "v1.31.0",
            "platform": "linux/amd64",
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2024-08-13T00:00:00Z",
            "goVersion": "go1.22.5",
            "compiler": "gc",
        }

    async def _serve_fetch(self, request: kmock.Request) -> rendering.Payload:
        kind = self._kind(request)
        if request.subresource not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return self.store.require(kind, request.namespace, request.name or "")

    async def _serve_create(self, request: kmock.Request) -> rendering.Payload:
        kind = self._kind(request)
        body = self._body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        created = self.store.create(kind, request.namespace, body, admit=admission.admit)
        return rendering.Response(status=201, payload=created)

    async def _serve_update(self, request: kmock.Request) -> rendering.Payload:
        kind = self._kind(request)
        current = self.store.require(kind, request.namespace, request.name or "")
        patch = self._body(request)
        content_type = request.headers.get("Content-Type", "")
        try:
            if "json-patch" in content_type or isinstance(patch, list):
                patched = jsonpatch.apply_patch(current, patch)
            else:
                patched = _merge(current, patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {exc}") from None
        expect = (
            (patch.get("metadata") or {}).get("resourceVersion")
            if isinstance(patch, dict)
            else None
        )
        return self._write(kind, request, current, patched, expect)

    async def _serve_replace(self, request: kmock.Request) -> rendering.Payload:
        kind = self._kind(request)
        if request.name is None:
            raise ApiError(405, "MethodNotAllowed", "PUT needs an object name")
        current = self.store.require(kind, request.namespace, request.name)
        body = self._body(request)
        return self._write(
            kind, request, current, body, (body.get("metadata") or {}).get("resourceVersion")
        )

    def _write(
        self, kind: Kind, request: kmock.Request, current: Obj, new: Obj, expect_rv: str | None
    ) -> Obj:
        # The status subresource changes only status; the main resource never does.
        if request.subresource == "status":
            result = {**current, "status": new.get("status", {})}
        else:
            result = {
                **new,
                "status": current.get("status", {}),
                "apiVersion": kind.api_version,
                "kind": kind.kind,
            }
        result["metadata"] = (
            {**current["metadata"], **new.get("metadata", {})}
            if request.subresource != "status"
            else current["metadata"]
        )
        return self.store.replace(kind, result, expect_rv=expect_rv)

    async def _serve_delete(self, request: kmock.Request) -> rendering.Payload:
        kind = self._kind(request)
        options = self._body(request) or {}
        params = request.params
        propagation = params.get("propagationPolicy") or options.get("propagationPolicy")
        if (
            propagation is None
            and (params.get("orphanDependents") or str(options.get("orphanDependents", ""))).lower()
            == "true"
        ):
            propagation = "Orphan"
        if propagation not in (None, "Orphan", "Background", "Foreground"):
            raise ApiError(400, "BadRequest", f"unknown propagationPolicy {propagation!r}")
        grace = params.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
        obj, removed = self.store.delete(
            kind,
            request.namespace,
            request.name or "",
            propagation=propagation,
            grace_s=None if grace is None else int(grace),
            preconditions=options.get("preconditions"),
        )
        if removed and kind != PODS:  # pods answer with the pod, other kinds with a Status
            return {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": obj["metadata"]["name"],
                    "group": kind.group,
                    "kind": kind.plural,
                    "uid": obj["metadata"]["uid"],
                },
            }
        return obj

    # --- watch -----------------------------------------------------------------------

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[rendering.Payload]:
        kind = self._kind(request)
        matches = self._predicate(request)
        try:
            timeout = float(request.params.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_S)
            since = request.params.get("resourceVersion") or "0"
            start_rv = int(since)
        except ValueError:
            raise ApiError(400, "BadRequest", "invalid timeoutSeconds or resourceVersion") from None
        return self._watch(request, kind, matches, timeout, start_rv)

    async def _watch(
        self, request: kmock.Request, kind: Kind, matches: Predicate, timeout: float, start_rv: int
    ) -> AsyncIterator[rendering.Payload]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        yield b""  # send the headers now, even if nothing happens for a while
        changes = self.store.changes
        if start_rv == 0:  # "any": a synthetic ADDED per existing object, then live
            for obj in self.store.list(kind, request.namespace, matches):
                yield {"type": "ADDED", "object": obj}
            cursor = len(changes)
        else:
            cursor = bisect.bisect_right([c.rv for c in changes], start_rv)
        while True:
            changed = self.store.changed()
            while cursor < len(changes):
                event = self._translate(changes[cursor], kind, request.namespace, matches)
                cursor += 1
                if event is not None:
                    yield event
            remaining = deadline - loop.time()
            transport = request._raw_request.transport if request._raw_request else None
            if remaining <= 0 or self.closing or transport is None or transport.is_closing():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, PEER_CHECK_S))

    @staticmethod
    def _translate(
        change: Change, kind: Kind, namespace: str | None, matches: Predicate
    ) -> dict[str, Any] | None:
        """What a filtered watch sees: objects entering or leaving the selection."""
        if change.kind != kind or (
            namespace is not None
            and kind.namespaced
            and change.obj["metadata"].get("namespace") != namespace
        ):
            return None
        now = matches(change.obj)
        before = change.old is not None and matches(change.old)
        if change.type == "MODIFIED" and now != before:
            return {"type": "ADDED" if now else "DELETED", "object": change.obj}
        return {"type": change.type, "object": change.obj} if now else None

    # --- logs --------------------------------------------------------------------------

    async def _serve_log(self, request: kmock.Request) -> AsyncIterator[bytes]:
        namespace, name = request.namespace or "", request.name or ""
        pod = self.store.require(PODS, namespace, name)
        spec, status = pod["spec"], pod.get("status") or {}
        mains = [c["name"] for c in spec["containers"]]
        inits = [c["name"] for c in spec.get("initContainers", [])]
        container = request.params.get("container")
        if not container:
            if len(mains) != 1:
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod "
                    f"{name}, choose one of: [{' '.join(mains)}] or one of the init "
                    f"containers: [{' '.join(inits)}]",
                )
            container = mains[0]
        if container not in mains + inits:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        query = LogQuery.from_params(request.params)
        if request.params.get("previous", "").lower() in ("true", "1"):
            raise ApiError(
                400,
                "BadRequest",
                f'previous terminated container "{container}" in pod "{name}" not found',
            )  # containers never restart here
        log = self.logs.get(namespace, name, container)
        if not spec.get("nodeName"):
            return self._empty()  # not scheduled: the API server has no kubelet to ask
        if log is None:
            raise ApiError(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is '
                f"waiting to start: {self._waiting_reason(status, container)}",
            )
        raw = request._raw_request
        return stream_log(
            log,
            query,
            store=self.logs,
            hang_up=lambda: raw.transport.close() if raw and raw.transport else None,
        )

    @staticmethod
    async def _empty() -> AsyncIterator[bytes]:
        yield b""

    @staticmethod
    def _waiting_reason(status: dict[str, Any], container: str) -> str:
        for entry in [
            *status.get("initContainerStatuses", []),
            *status.get("containerStatuses", []),
        ]:
            if entry.get("name") == container:
                reason = (entry.get("state", {}).get("waiting") or {}).get("reason")
                if reason == "ErrImagePull":
                    return "trying and failing to pull image"
                if reason == "ImagePullBackOff":
                    return "image can't be pulled"
                return reason or "ContainerCreating"
        return "ContainerCreating"
