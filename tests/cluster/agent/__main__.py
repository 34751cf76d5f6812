"""python -m tests.cluster.agent --node NAME --arch ARCH --api URL ... (see controlplane.py)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from tests.cluster.agent.kubeapi import KubeApi
from tests.cluster.agent.kubelet import KubeletConfig
from tests.cluster.agent.node import NodeAgent
from tests.cluster.agent.runtime import Mount


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
    parser.add_argument("--container-path", required=True)
    parser.add_argument("--nfs-export", action="append", default=[])
    parser.add_argument("--image-dir", action="append", default=[],
                        help="PATH=DIR: DIR appears read-only at PATH in every container")
    parser.add_argument("--node-status-grace-s", type=float, default=40)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exports = dict(item.split("=", 1) for item in args.nfs_export)
    config = KubeletConfig(
        state_dir=args.state_dir,
        nfs_exports={k: Path(v) for k, v in exports.items()},
        base_env={"PATH": args.container_path, "HOME": "/root",
                  "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                  "KUBERNETES_SERVICE_PORT": args.api.rsplit(":", 1)[1]},
        max_grace_s=10.0,
        image_mounts=[Mount(Path(d.split("=", 1)[1]), d.split("=", 1)[0], read_only=True)
                      for d in args.image_dir],
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
