"""python -m tests.cluster.agent --node NAME --arch ARCH --api URL ... (see controlplane.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from tests.cluster.agent.images import DEFAULT_CACHE, DEFAULT_MAX_BYTES, ImageStore
from tests.cluster.agent.kubeapi import KubeApi
from tests.cluster.agent.kubelet import KubeletConfig
from tests.cluster.agent.node import NodeAgent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.agent")
    parser.add_argument("--node", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--emulated", action="store_true")
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--api", required=True)
    parser.add_argument("--ca", type=Path, required=True)
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--serving-cert", type=Path, required=True)
    parser.add_argument("--serving-key", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--image-cache", type=Path, default=DEFAULT_CACHE,
                        help="unpacked images by digest, shared by the agents of a machine")
    parser.add_argument("--image-cache-max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument("--image-backoff-s", type=float, default=2.0,
                        help="first delay between re-pulls of a failed image (kubelet: 10)")
    parser.add_argument("--image-backoff-max-s", type=float, default=30.0,
                        help="longest delay between re-pulls (kubelet: 300)")
    parser.add_argument("--native-image", action="append", default=[], metavar="REPOSITORY",
                        help="an emulated node runs this repository (path, any registry) in "
                        "the machine's own architecture (see ImageStore.platform_arch)")
    parser.add_argument("--nfs-export", action="append", default=[])
    parser.add_argument("--node-status-grace-s", type=float, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exports = dict(item.split("=", 1) for item in args.nfs_export)
    config = KubeletConfig(
        state_dir=args.state_dir,
        nfs_exports={k: Path(v) for k, v in exports.items()},
        base_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                  "KUBERNETES_SERVICE_PORT": args.api.rsplit(":", 1)[1]},
        max_grace_s=10.0,
        images=ImageStore(cache=args.image_cache, node_dir=args.state_dir / args.node,
                          arch=args.arch, max_bytes=args.image_cache_max_bytes,
                          native_repositories=frozenset(args.native_image)),
        image_backoff_s=args.image_backoff_s,
        image_backoff_max_s=args.image_backoff_max_s,
    )
    labels = dict(item.split("=", 1) for item in args.label)

    async def run() -> None:
        async with KubeApi(args.api, ca=args.ca, cert=args.cert, key=args.key) as api:
            agent = NodeAgent(name=args.node, arch=args.arch, emulated=args.emulated,
                              labels=labels, api=api, config=config, kubelet_port=args.port,
                              control_port=args.control_port,
                              serving=(args.serving_cert, args.serving_key), ca=args.ca)
            await agent.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
