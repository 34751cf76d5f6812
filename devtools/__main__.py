"""`python -m devtools up|down|status|builder|serve|stop|gotools`: the one-machine dev services.

up/down/status: the local registry, QEMU emulation and the busybox base image (`make up`,
`make down`); builder: the Debian base and the multi-arch builder image (`make builder`,
after `make up`); serve/stop: a Prefect server, work pools, a worker and the deployments on top
(`make serve`, `make stop`); gotools: build (or find) the Go tools the tests use (crane, regctl,
the referrers registry), cached in ~/.cache/multiarch-builder/gotools; toolchain: build (or find)
the Debian 13 toolchain rootfs (buildah 1.39, skopeo 1.18) and print its tools' versions
(multiarch/toolchain_rootfs.py). Not part of the shipped package: it runs from a checkout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from devtools import builder_image, gotools, playground, postgres, serve, supervisor
from devtools.serve_config import ServeError, load_settings
from multiarch.errors import MultiarchError

DEFAULT_STATE_DIR = Path(".local")
DEFAULT_REGISTRY_PORT = 5000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devtools", description=__doc__)
    parser.add_argument(
        "action",
        choices=["up", "down", "status", "builder", "serve", "stop", "gotools", "toolchain"],
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the registry, the Prefect server and the worker keep data, logs and pids "
        "(default .local; serve/stop: $MULTIARCH_STATE_DIR or <repo>/.local)",
    )
    parser.add_argument(
        "--port",
        type=int,
        help="the registry's port (default 5000; serve: $MULTIARCH_REGISTRY_PORT)",
    )
    parser.add_argument(
        "--rebuild-base",
        action="store_true",
        help="rebuild the busybox base image even if it exists",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.action == "gotools":
        return gotools.main()
    if args.action in ("serve", "stop"):
        settings = load_settings(state_dir=args.state_dir, registry_port=args.port)
        return serve.serve(settings) if args.action == "serve" else serve.stop(settings)
    if args.action == "toolchain":
        from multiarch import toolchain_rootfs

        return toolchain_rootfs.main()
    state_dir = (args.state_dir or DEFAULT_STATE_DIR).resolve()
    port = args.port or DEFAULT_REGISTRY_PORT
    if args.action == "up":
        playground.up(state_dir=state_dir, port=port, rebuild_base=args.rebuild_base)
    elif args.action == "builder":
        address = f"127.0.0.1:{port}"
        builder_image.ensure_builder(address, state_dir=state_dir, log=playground.console_logger())
    elif args.action == "down":
        playground.down(state_dir=state_dir)
    else:
        print(playground.status(state_dir=state_dir, port=port))
        settings = load_settings(state_dir=state_dir)
        services = (
            serve.server_service(settings),
            serve.worker_service(settings),
            postgres.cluster_for_stop(settings).service(),
        )
        for service in services:
            print(
                supervisor.status(name=service.name, state_dir=service.state_dir, port=service.port)
            )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (MultiarchError, ServeError, supervisor.SupervisorError) as error:
        print(f"devtools {args.action}: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"devtools {args.action}: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
