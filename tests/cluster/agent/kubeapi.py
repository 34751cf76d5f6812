"""The node agent's client of the real API server: REST over HTTPS with the node's
client certificate, so the Node authorizer and NodeRestriction judge every call the way
they judge a kubelet's.

Small on purpose: get, create, patch (merge or strategic-merge), delete, and a watch that
yields (type, object) and ends on the server's timeout. Errors are `ApiError` carrying the
API's Status code, reason and message.
"""

from __future__ import annotations

import datetime
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    """MicroTime, as Lease renewTime wants it."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class KubeApi:
    """One aiohttp session to the API server, authenticated by client certificate."""

    def __init__(self, server: str, *, ca: Path, cert: Path, key: Path) -> None:
        self.server = server.rstrip("/")
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self.ssl.load_cert_chain(str(cert), str(key))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeApi:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.ssl, limit=32),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with KubeApi(...)`"
        return self._session

    async def _call(self, method: str, path: str, *, body: Any = None,
                    content_type: str = "application/json",
                    params: Mapping[str, str] | None = None) -> Obj:
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        async with self.session.request(method, self.server + path, data=data, headers=headers,
                                        params=params,
                                        timeout=aiohttp.ClientTimeout(total=60)) as response:
            text = await response.text()
            payload = json.loads(text) if text.strip().startswith("{") else {}
            if response.status >= 400:
                raise ApiError(response.status, payload.get("reason", response.reason or ""),
                               payload.get("message", text[:300]))
            return payload

    async def get(self, path: str, **params: str) -> Obj | None:
        try:
            return await self._call("GET", path, params=params or None)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Obj) -> Obj:
        return await self._call("POST", path, body=body)

    async def put(self, path: str, body: Obj) -> Obj:
        return await self._call("PUT", path, body=body)

    async def patch(self, path: str, body: Obj, *, strategic: bool = False) -> Obj:
        return await self._call("PATCH", path, body=body,
                                content_type=STRATEGIC if strategic else MERGE)

    async def delete(self, path: str, body: Obj | None = None) -> Obj | None:
        try:
            return await self._call("DELETE", path, body=body)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(self, path: str, *, resource_version: str, timeout_s: int = 60,
                    **params: str) -> AsyncIterator[tuple[str, Obj]]:
        query = {"watch": "true", "resourceVersion": resource_version,
                 "timeoutSeconds": str(timeout_s), "allowWatchBookmarks": "true", **params}
        async with self.session.get(self.server + path, params=query,
                                    timeout=aiohttp.ClientTimeout(total=timeout_s + 30)
                                    ) as response:
            if response.status >= 400:
                text = await response.text()
                raise ApiError(response.status, response.reason or "", text[:300])
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        status = event["object"]
                        raise ApiError(status.get("code", 500), status.get("reason", ""),
                                       status.get("message", ""))
                    yield event["type"], event["object"]
