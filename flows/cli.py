"""The `multiarch` command: multiarch.cli with the flow its builds run through.

The entry point lives here, above the core, so that `multiarch` (the package) never
imports the flow that composes it; Prefect is imported only when a build runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from multiarch import cli
from multiarch.results import BuildResult


def run_flow(parameters: dict[str, Any]) -> BuildResult:
    from flows.build import build_multiarch_image

    result: BuildResult = build_multiarch_image(**parameters)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(argv, run_flow=run_flow)


if __name__ == "__main__":
    sys.exit(main())
