"""`multiarch`: one-off builds through the same Prefect flow, and the commands pods run.

`multiarch build` validates its arguments before anything starts (a bad platform costs no
Prefect start-up), then runs the `build-multiarch-image` flow. Exit status 0 on success;
otherwise one line on stderr saying what failed.

The flow is handed in by the entry point (flows/cli.py): the core never imports the flow
that composes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from multiarch.credentials import (
    ENV_CREDENTIALS,
    ENV_CREDENTIALS_FILE,
    has_credentials,
    move_to_environment,
    redact,
)
from multiarch.errors import MultiarchError
from multiarch.parameters import add_request_options
from multiarch.parameters import request_from_args as request_fields
from multiarch.request import BuildRequest, describe_validation_error
from multiarch.results import BuildResult
from multiarch.runclaim import TEMP_SERVER_PID_ENV


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="multiarch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="build and publish a multi-arch image")
    # Every field of BuildRequest, as a flag (multiarch.parameters): the flow's parameters
    # and these options cannot drift apart.
    add_request_options(build, BuildRequest)
    build.add_argument("--json", action="store_true", help="print the result as one JSON object")

    publish = commands.add_parser(
        "publish-layouts",
        help="(used inside publish pods) publish per-platform OCI layouts as one index",
    )
    publish.add_argument("--spec", required=True, help="PublishSpec as JSON")
    publish.add_argument("--result-file", help="write the BuildResult JSON here too")

    gc = commands.add_parser("gc", help="remove what killed runs left behind on this machine")
    gc.add_argument("--work-dir", help="work directory (default $MULTIARCH_WORK_DIR or "
                    "/var/tmp/multiarch)")

    return parser


def request_from_args(args: argparse.Namespace) -> BuildRequest:
    return BuildRequest.model_validate(request_fields(args, BuildRequest))


CREDENTIALS_NOTICE = (
    "multiarch: --context carried credentials: they were moved into this run's environment "
    f"({ENV_CREDENTIALS}) and Prefect only sees the URL without them (next time, set "
    f"{ENV_CREDENTIALS} or {ENV_CREDENTIALS_FILE} instead)"
)


def reexec_without_credentials(args: argparse.Namespace) -> None:
    """A token on our own command line shows in `ps` for as long as the build runs: move it
    into the environment and exec ourselves again (same pid) with the clean URL."""
    context = args.context
    clean = move_to_environment(context)
    argv = [arg.replace(context, clean) for arg in sys.orig_argv]
    if clean == context or argv == sys.orig_argv:
        return  # no credentials, or not from our command line (main called with a list)
    print(CREDENTIALS_NOTICE, file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, *argv[1:]])  # noqa: S606 - ourselves, argv list


RunFlow = Callable[[dict[str, Any]], BuildResult]


def run_build(args: argparse.Namespace, run_flow: RunFlow) -> int:
    """Run the flow in this process (`run_build_with_server` has set Prefect's settings)."""
    request = request_from_args(args)
    if has_credentials(request.context):
        print(CREDENTIALS_NOTICE, file=sys.stderr, flush=True)
        request = request.model_copy(update={"context": move_to_environment(request.context)})
    result = run_flow(request.model_dump(mode="json"))
    if args.json:
        print(json.dumps(result.model_dump(mode="json")))
    else:
        from multiarch.reporting import text_table

        print(f"\npublished {result.image} tags: {', '.join(result.tags)}")
        print(f"index digest: {result.index_digest}\n")
        print(text_table(result))
    return 0


def run_publish_layouts(args: argparse.Namespace) -> int:
    """Publish from a spec; the result goes to stdout and, in a pod, the termination log."""
    from multiarch.publish import PublishSpec, publish_from_spec

    spec = PublishSpec.model_validate_json(args.spec)
    result = publish_from_spec(
        spec, emit=lambda line: print(line.removeprefix("[publish] "), flush=True)
    )
    encoded = result.model_dump_json()
    if args.result_file:
        Path(args.result_file).write_text(encoded)
    print(encoded, flush=True)
    return 0


def run_gc(args: argparse.Namespace) -> int:
    """Remove what killed runs left under the work directory, and say what went."""
    from multiarch.runclaim import sweep
    from multiarch.workspace import work_dir

    work = work_dir(args.work_dir)
    swept = sweep(work)
    for item in swept:
        print(item)
    print(f"{len(swept)} removed under {work}" if swept else f"nothing to remove under {work}")
    return 0


def run_build_with_server(args: argparse.Namespace, run_flow: RunFlow) -> int:
    """Run the build; without PREFECT_API_URL, start the temporary server first ourselves.

    Prefect would start it lazily anyway (the same instance is reused); starting it here
    lets the run record its pid, so that if this process is killed outright the next run's
    sweep (or `multiarch gc`) stops the orphaned server.
    """
    from multiarch.preflight import preflight_request
    from multiarch.runners import runner_for

    # Bad input, a missing tool, an unreachable registry or a missing stage are refused
    # in seconds, before a temporary server starts (the flow checks again, cheaply).
    request = request_from_args(args)
    runner_for(request.runner.kind).preflight(request)
    preflight_request(request)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import prefect.main  # noqa: F401 - Prefect's logging, so the server's address is shown
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start()
        if server.server_process is not None:
            os.environ[TEMP_SERVER_PID_ENV] = str(server.server_process.pid)
    return run_build(args, run_flow)


class Terminated(Exception):
    """SIGTERM outside a flow run (Prefect handles it inside): unwind so exit hooks run."""


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


def exit_status_of_cancel(message: str) -> int:
    """128 + the signal that cancelled the run; 1 when it was cancelled through the API."""
    for name in ("SIGTERM", "SIGINT"):
        if name in message:
            return 128 + signal.Signals[name].value
    return 1


def main(argv: Sequence[str] | None = None, *, run_flow: RunFlow | None = None) -> int:
    """`run_flow` runs the build flow with a request's parameters (flows/cli.py gives it)."""
    args = build_parser().parse_args(argv)
    with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
        signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "build":
            if run_flow is None:
                print("multiarch: build runs through the flow: use the `multiarch` command "
                      "(flows/cli.py)", file=sys.stderr)
                return 2
            if argv is None:
                reexec_without_credentials(args)
            return run_build_with_server(args, run_flow)
        if args.command == "publish-layouts":
            return run_publish_layouts(args)
        if args.command == "gc":
            return run_gc(args)
    except ValidationError as exc:
        print(f"multiarch: invalid request: {describe_validation_error(exc)}", file=sys.stderr)
    except MultiarchError as exc:
        print(f"multiarch: {redact(str(exc))}", file=sys.stderr)
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"multiarch: interrupted ({exc or 'SIGINT'}), nothing was published",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        from prefect.exceptions import CancelledRun

        if not isinstance(exc, CancelledRun):
            raise
        print(f"multiarch: {exc}", file=sys.stderr)
        return exit_status_of_cancel(str(exc))
    return 1


if __name__ == "__main__":
    sys.exit(main())
