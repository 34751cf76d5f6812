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

    verify = commands.add_parser(
        "verify", help="check a published image: index, platforms, signatures, SBOM and "
        "provenance per platform; exit status 1 on any gap")
    verify.add_argument("image", help="registry/repository[:tag|@sha256:...] (default tag "
                        "latest)")
    verify.add_argument("--key", help="armored GPG public key the signatures must verify "
                        "with (without it signatures are listed, not checked)")
    verify.add_argument("--insecure-registry", action="store_true",
                        help="plain HTTP or unverified TLS (127.0.0.1/localhost may answer "
                        "in plain HTTP without it; their TLS is verified)")
    verify.add_argument("--export-lookaside", metavar="DIR",
                        help="also write the verified signatures as a containers lookaside "
                        "directory (for a skopeo/podman policy: registries.d lookaside: "
                        "file://DIR)")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")

    keygen = commands.add_parser(
        "keygen", help="make a GPG signing key without passphrase: DIR/signing.key (secret, "
        "0600) and DIR/signing.pub")
    keygen.add_argument("directory", help="where to write the two files")
    keygen.add_argument("--force", action="store_true", help="replace existing files")

    gc = commands.add_parser("gc", help="remove what killed runs left behind on this machine")
    gc.add_argument("--work-dir", help="work directory (default $MULTIARCH_WORK_DIR or "
                    "/var/tmp/multiarch)")
    gc.add_argument("--cache-max-age", type=float, default=7.0, metavar="DAYS",
                    help="also remove RUN --mount=type=cache directories no build used for "
                    "DAYS (default 7; 0: every one no build is using)")

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
        for tools in sorted({p.builder for p in result.platforms if p.builder}):
            print(f"built with {tools}")
        for left in result.left_out:
            print(f"left out {left.platform} (optional, it failed): {left.reason}")
        for item in result.attestations:
            print(f"attached {item.kind:<10} of {item.subject}: {item.digest} ({item.size} B)")
        if result.signed_by:
            print(f"signed with GPG key {result.signed_by}")
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
    from multiarch.cache_mounts import prune
    from multiarch.runclaim import sweep
    from multiarch.workspace import work_dir

    work = work_dir(args.work_dir)
    swept = [str(item) for item in sweep(work)]
    swept += [f"cache mounts unused for {args.cache_max_age:g} days removed: {path}"
              for path in prune(work, max_age_s=args.cache_max_age * 86400)]
    for item in swept:
        print(item)
    print(f"{len(swept)} removed under {work}" if swept else f"nothing to remove under {work}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Print the table of `multiarch.verify`; 0 only when nothing is missing or invalid."""
    from multiarch.references import ImageReference
    from multiarch.registry_api import registry_client
    from multiarch.signing import keyring
    from multiarch.verify import export_lookaside, text_table, verify_image

    image = ImageReference.model_validate(args.image.split("@", 1)[0])
    reference = args.image.split("@", 1)[1] if "@" in args.image else (image.tag or "latest")
    with contextlib.ExitStack() as stack:
        ring = None
        if args.key:
            try:
                armored = Path(args.key).read_bytes()
            except OSError as exc:
                raise MultiarchError(f"--key: cannot read {args.key}: {exc.strerror}") from exc
            ring = stack.enter_context(keyring(armored, what=f"--key {args.key}"))
        client = stack.enter_context(registry_client(
            image.registry, insecure=args.insecure_registry, plain_http_loopback=True))
        report = verify_image(client, image, reference, keyring=ring)
        if args.export_lookaside and report.ok and report.digest:
            written = export_lookaside(client, image, report, Path(args.export_lookaside))
            print(f"wrote {written} signatures under {args.export_lookaside}", file=sys.stderr)
    if args.json:
        print(json.dumps({"reference": report.reference, "digest": report.digest,
                          "ok": report.ok, "gaps": report.gaps,
                          "parts": [vars(p) for p in report.parts]}))
    else:
        print(f"{report.reference} -> {report.digest or 'not found'}\n")
        print(text_table(report))
        if ring is None:
            print("\nsignatures not checked: pass --key PUBLIC_KEY to check them")
        for gap in report.gaps:
            print(f"GAP: {gap}")
        print("\nverified: nothing missing" if report.ok
              else f"\nNOT VERIFIED: {len(report.gaps)} gaps")
    return 0 if report.ok else 1


def run_keygen(args: argparse.Namespace) -> int:
    from multiarch.signing import generate_key

    directory = Path(args.directory)
    existing = [p for p in (directory / "signing.key", directory / "signing.pub") if p.exists()]
    if existing and not args.force:
        print(f"multiarch: {existing[0]} exists: keep it, or pass --force to replace it",
              file=sys.stderr)
        return 1
    secret, public = generate_key(directory)
    print(f"secret key {secret} (keep it private), public key {public}")
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
        if args.command == "verify":
            return run_verify(args)
        if args.command == "keygen":
            return run_keygen(args)
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
