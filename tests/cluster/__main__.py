"""make cluster / make cluster-down: `python -m tests.cluster up|down [--state-dir DIR]`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.cluster import controlplane


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--state-dir", type=Path, default=Path(".local/cluster"))
    args = parser.parse_args()
    if args.command == "down":
        controlplane.down(args.state_dir)
        print(f"cluster stopped, {args.state_dir} removed (the binary stays cached)")
        return 0
    started = time.monotonic()
    state = controlplane.up(args.state_dir)
    nodes = ", ".join(f"{n.name} ({n.arch}{', emulated' if n.emulated else ''})"
                      for n in state.nodes)
    print(f"Kubernetes {state.version} up in {time.monotonic() - started:.1f} s at "
          f"{state.api_url}; nodes: {nodes}")
    print(f"  export KUBECONFIG={state.kubeconfig.resolve()}")
    print(f"  {controlplane.binary.kubectl_path()} "
          "get nodes -o wide")
    print("  make cluster-down   # stop it and remove its state")
    return 0


if __name__ == "__main__":
    sys.exit(main())
