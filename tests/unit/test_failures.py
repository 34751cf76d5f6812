"""Retry classification over real error output of buildah, skopeo and git.

Every file in tests/unit/captured/ is what the tool really printed here (README.md there
says how each was made); the table says what the runner must do with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from multiarch.errors import StepFailed, TransientStepFailure
from multiarch.failures import (
    classify_output,
    is_transient_message,
    step_paths,
    tool_error_lines,
)
from multiarch.process import TAIL_LINES, classify_failure

CAPTURED = Path(__file__).parent / "captured"
TRANSIENT, PERMANENT = True, False

# file -> (retry?, the cause the verdict must name)
TABLE: dict[str, tuple[bool, str]] = {
    "buildah-run-prints-refused-exits-3": (PERMANENT, "RUN step exited with 3"),
    "buildah-from-closed-port": (TRANSIENT, "connection refused"),
    "buildah-from-503": (TRANSIENT, "service unavailable"),
    "buildah-from-401": (PERMANENT, "unauthorized"),
    "buildah-from-manifest-unknown": (PERMANENT, "manifest unknown"),
    "buildah-enospc-storage": (PERMANENT, "no space left on device"),
    "buildah-unknown-instruction": (PERMANENT, "unknown instruction"),
    "buildah-copy-missing": (PERMANENT, "unrecognised error"),
    "buildah-target-missing": (PERMANENT, "not found"),
    "skopeo-push-401": (PERMANENT, "unauthorized"),
    "skopeo-push-403": (PERMANENT, "forbidden"),
    "skopeo-push-500": (TRANSIENT, "internal server error"),
    "skopeo-push-502": (TRANSIENT, "bad gateway"),
    "skopeo-push-503": (TRANSIENT, "service unavailable"),
    "skopeo-push-504": (TRANSIENT, "gateway timeout"),
    "skopeo-push-reset": (TRANSIENT, "connection reset"),
    "skopeo-inspect-429": (TRANSIENT, "too many requests"),
    "skopeo-inspect-unexpected-eof": (TRANSIENT, "unexpected eof"),
    "skopeo-inspect-tls-handshake-timeout": (TRANSIENT, "tls handshake timeout"),
    "skopeo-inspect-manifest-unknown": (PERMANENT, "manifest unknown"),
    "skopeo-enospc-layout": (PERMANENT, "no space left on device"),
    "skopeo-dns-no-such-host": (PERMANENT, "no such host"),
    "skopeo-dns-timeout": (TRANSIENT, "i/o timeout"),
    "skopeo-dns-servfail": (TRANSIENT, "server misbehaving"),
    "skopeo-dns-refused": (TRANSIENT, "connection refused"),
    "skopeo-network-unreachable": (TRANSIENT, "network is unreachable"),
    "skopeo-no-route-to-host": (TRANSIENT, "no route to host"),
    "skopeo-connection-timed-out": (TRANSIENT, "connection timed out"),
    "git-closed-port": (TRANSIENT, "couldn't connect to server"),
    "git-connection-timed-out": (TRANSIENT, "couldn't connect to server"),
    "git-dns-no-such-host": (TRANSIENT, "could not resolve host"),  # curl cannot tell
    "git-repository-not-found": (PERMANENT, "not found"),
    "glibc-temporary-dns-failure": (TRANSIENT, "temporary failure in name resolution"),
}

# Lines the tools print that could not be provoked here, written as the tools' source
# code formats them (see captured/README.md).
FROM_SOURCE: list[tuple[str, bool]] = [
    ('Error: creating build container: initializing source docker://registry.example.com/'
     'team/base:1: reading manifest 1 in registry.example.com/team/base: toomanyrequests: '
     'You have reached your pull rate limit.', TRANSIENT),
    ("fatal: unable to access 'https://git.example.com/team/app.git/': Recv failure: "
     "Connection reset by peer", TRANSIENT),
]


def captured(name: str) -> list[str]:
    return (CAPTURED / f"{name}.txt").read_text().splitlines()


def test_every_captured_file_is_in_the_table() -> None:
    assert {p.stem for p in CAPTURED.glob("*.txt")} == set(TABLE)


@pytest.mark.parametrize(("name", "expected"), TABLE.items(), ids=list(TABLE))
def test_captured_output_is_classified_by_the_tools_own_error(
    name: str, expected: tuple[bool, str]
) -> None:
    transient, reason = expected
    verdict = classify_output(captured(name)[-TAIL_LINES:])
    assert verdict.transient is transient
    assert verdict.reason.lower().startswith(reason.lower())


@pytest.mark.parametrize(("line", "transient"), FROM_SOURCE)
def test_lines_taken_from_the_tools_source(line: str, transient: bool) -> None:
    assert classify_output(["Getting image source signatures", line]).transient is transient


def test_a_run_steps_output_is_never_read() -> None:
    """The RUN step printed "Connection refused" and "Error: 503 ...", then exited 3."""
    lines = captured("buildah-run-prints-refused-exits-3")
    errors = tool_error_lines(lines)
    assert errors == [lines[-1]]
    assert errors[0].startswith('Error: building at STEP "RUN ')
    assert "Error: 503 Service Unavailable" in lines  # what the RUN step itself said


def test_run_exit_is_permanent_through_the_runner() -> None:
    tail = captured("buildah-run-prints-refused-exits-3")[-TAIL_LINES:]
    failure = classify_failure("build", 3, tail, label="[linux/amd64]")
    assert type(failure) is StepFailed
    assert str(failure).endswith("while running runtime: exit status 3")


def test_a_pull_refused_is_retried_through_the_runner() -> None:
    tail = captured("buildah-from-closed-port")[-TAIL_LINES:]
    failure = classify_failure("build", 125, tail, label="[linux/amd64]")
    assert isinstance(failure, TransientStepFailure)
    assert str(failure) == (
        "[linux/amd64]: step build exited with 125: Error: creating build container: "
        "initializing source docker://127.0.0.1:1/library/busybox:latest: pinging container "
        'registry 127.0.0.1:1: Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: '
        "connection refused"
    )


def test_disk_full_names_the_path_from_skopeos_error_and_its_free_space() -> None:
    verdict = classify_output(captured("skopeo-enospc-layout"))
    # the tmpfs is gone: the nearest existing parent of the named path is measured
    assert verdict.reason.startswith("no space left on device: /tmp/capD/tiny1/layout/")
    assert " free of " in verdict.reason


def test_disk_full_without_a_path_names_the_steps_storage(tmp_path: Path) -> None:
    """buildah's message names no path; the step's --root does."""
    argv = ("buildah", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"),
            "build", ".")
    failure = classify_failure("build", 125, captured("buildah-enospc-storage"),
                               label="[linux/amd64]", paths=step_paths(argv))
    assert type(failure) is StepFailed
    free = shutil.disk_usage(tmp_path).free
    assert f"(no space left on device: {tmp_path}/" in str(failure)
    assert "free of" in str(failure)
    assert free > 0


def test_step_paths_finds_storage_and_layout() -> None:
    argv = ("skopeo", "copy", "containers-storage:[vfs@/w/root+/w/run]img",
            "oci:/shared/run/linux-amd64:image")
    assert step_paths(argv) == ["/shared/run/linux-amd64"]
    assert step_paths(("buildah", "--root", "/r", "--runroot", "/rr", "build")) == ["/r", "/rr"]


@pytest.mark.parametrize(
    ("text", "transient"),
    [
        ("received unexpected HTTP status: 503 Service Unavailable", TRANSIENT),
        ("invalid status code from registry 500 (Internal Server Error)", TRANSIENT),
        ("writing manifest: 429", TRANSIENT),
        ("unauthorized: authentication required", PERMANENT),
        ("write /shared/x: no space left on device", PERMANENT),
        # a digest that happens to contain "503" is not an HTTP status
        ("manifest sha256:1503aa00 is invalid", PERMANENT),
    ],
)
def test_is_transient_message(text: str, transient: bool) -> None:
    assert is_transient_message(text) is transient


def test_is_transient_message_reads_skopeos_last_error_line() -> None:
    text = "\n".join(captured("skopeo-push-503"))
    assert is_transient_message(text)
    assert not is_transient_message("\n".join(captured("skopeo-push-401")))
