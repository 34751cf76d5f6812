"""The node agent's two listeners.

- The kubelet endpoint (HTTPS, client certificates from the cluster CA required): only
  `GET /containerLogs/{namespace}/{pod}/{container}`, which kube-apiserver proxies
  `pods/log` to, with the kubelet's query options (follow, timestamps, sinceTime,
  sinceSeconds, tailLines, limitBytes). So `kubectl logs -f` and the runner's log
  streaming go through the real API server, its authorization and its proxy.
- A control endpoint for tests (plain HTTP on 127.0.0.1, not part of any kubelet): inject
  failures a real node can have (evict, OOM-kill, a dropped log stream, a lost
  heartbeat) and read what the agent itself got wrong. An image that cannot be pulled
  needs no hook: a missing tag in a real registry does it.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from tests.cluster.agent.kubeapi import ApiError
from tests.cluster.agent.logs import LogQuery, stream_log

if TYPE_CHECKING:
    from tests.cluster.agent.node import NodeAgent


def kubelet_app(agent: NodeAgent) -> web.Application:
    async def container_logs(request: web.Request) -> web.StreamResponse:
        info = request.match_info
        log = agent.logs.get(info["namespace"], info["pod"], info["container"])
        if log is None:
            return web.Response(status=404, text=f"container {info['container']!r} of pod "
                                f"{info['namespace']}/{info['pod']} not found on this node")
        try:
            query = LogQuery.from_params(request.query)
        except ApiError as exc:
            return web.Response(status=exc.status, text=exc.message)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        hung_up = False

        def hang_up() -> None:
            nonlocal hung_up
            hung_up = True

        async for chunk in stream_log(log, query, store=agent.logs, hang_up=hang_up):
            if chunk:
                await response.write(chunk)
            if hung_up:
                assert request.transport is not None
                request.transport.close()
                return response
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", container_logs)
    return app


def serving_context(*, ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def control_app(agent: NodeAgent) -> web.Application:
    def pod_arg(request: web.Request) -> tuple[str, str]:
        namespace, _, name = request.query["pod"].partition("/")
        return namespace, name

    async def evict(request: web.Request) -> web.Response:
        agent.evict(*pod_arg(request))
        return web.json_response({"ok": True})

    async def oom_kill(request: web.Request) -> web.Response:
        agent.oom_kill(*pod_arg(request), request.query.get("container"))
        return web.json_response({"ok": True})

    async def set_oom(request: web.Request) -> web.Response:
        agent.config.oom_containers.clear()
        agent.config.oom_containers.update(await request.json())
        return web.json_response({"ok": True})

    async def drop(request: web.Request) -> web.Response:
        agent.logs.drop_once(int(request.query["after"]))
        return web.json_response({"ok": True})

    async def heartbeat(request: web.Request) -> web.Response:
        agent.heartbeat_paused = request.query.get("paused") == "true"
        return web.json_response({"ok": True})

    async def lose(request: web.Request) -> web.Response:
        agent.lose()
        return web.json_response({"ok": True})

    async def state(request: web.Request) -> web.Response:
        return web.json_response({
            "dropped": agent.logs.dropped,
            "errors": [repr(e) for e in agent.errors],
            "running": sorted(w.name for k in [agent.kubelet] for w in k.workers.values()
                              if not w.done),
        })

    def guarded(handler: Handler) -> Handler:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except LookupError as exc:
                return web.json_response({"error": str(exc)}, status=404)
        return run

    app = web.Application()
    app.router.add_post("/evict", guarded(evict))
    app.router.add_post("/oom-kill", guarded(oom_kill))
    app.router.add_put("/oom-containers", set_oom)
    app.router.add_post("/drop-log-stream", drop)
    app.router.add_post("/heartbeat", heartbeat)
    app.router.add_post("/lose", lose)
    app.router.add_get("/state", state)
    return app
