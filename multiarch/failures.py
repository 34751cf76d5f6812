"""Is a failure worth retrying? Decided from the failing tool's own error, never a RUN step's.

A build step's output mixes two voices: buildah (or skopeo, git) reporting on its work,
and a RUN step's own output, which can say anything ("Connection refused", even
"Error: 503 Service Unavailable") without the network being at fault. Retrying on words a
RUN step printed rebuilds three times what will fail the same way. So the output is split:
lines between `STEP n/m: RUN ...` and buildah's next line of its own are the RUN step's
and are never read; of the rest, the tool's last error line decides (buildah, skopeo and
git all end on the error that made them exit). A RUN step that exits non-zero is
permanent, whatever it printed; so are a full disk, auth failures, a missing manifest and
Containerfile errors. Network and registry hiccups are transient.

The example lines in tests/unit/captured/ were produced by the real tools on this machine.
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Substrings (lowercase) of a tool's own error that mark a passing failure: the network
# or the registry, not the input. Other modules scan stderr with these, so they stay
# plain substrings; keep them specific enough never to match a permanent error.
TRANSIENT_MARKERS = (
    "connection refused",
    "connection reset",
    "connection timed out",
    "i/o timeout",
    "no route to host",
    "network is unreachable",
    "temporary failure in name resolution",
    "server misbehaving",  # Go's resolver: the DNS server answered SERVFAIL
    "could not resolve host",  # curl (git): says the same for a typo and a DNS outage
    "couldn't connect to server",  # curl (git): refused, unreachable or timed out
    "tls handshake timeout",
    "unexpected eof",
    "toomanyrequests",
    "too many requests",
    "internal server error",  # 500 from a registry: retried like the gateway errors
    "bad gateway",
    "service unavailable",
    "gateway timeout",
    # skopeo, when the registry drops the connection while it still sends a blob (measured
    # with a reset 32 KiB into a PATCH): Go reports its own write failing, not the reset.
    "use of closed network connection",
    "broken pipe",
    # git, when the remote or the network gives out mid-transfer
    "early eof",
    "the remote end hung up",
    "temporarily unavailable",
)

# Permanent causes worth naming (lowercase substring -> what to do). Checked before the
# transient markers: "unauthorized" beats a 500 mentioned in the same sentence.
PERMANENT_CAUSES: tuple[tuple[str, str], ...] = (
    ("no space left on device", "free space there or point work_dir/shared_dir elsewhere"),
    ("unauthorized", "check the registry credentials (auth file or Secret)"),
    ("authentication required", "check the registry credentials (auth file or Secret)"),
    ("forbidden", "check the account's push/pull permission on the repository"),
    ("denied", "check the account's push/pull permission on the repository"),
    ("manifest unknown", "check the image name and tag"),
    ("not found", "check the name (image, tag, repository or target stage)"),
    ("no such host", "check the host name: the DNS server says it does not exist"),
    ("unknown instruction", "fix the Containerfile"),
)

ENOSPC = "no space left on device"
_STEP_RE = re.compile(r"^STEP \d+/\d+: (?P<instruction>.*)$")
_RUN_EXIT_RE = re.compile(r"(?:while running runtime: )?exit status (?P<code>\d+)\s*$")
# A line the tool itself wrote about a failure (buildah/skopeo logrus, cobra, git).
_ERROR_LINE_RE = re.compile(
    r"^(?:Error: |error: |fatal: |ERRO\[|FATA\[|time=\"[^\"]*\" level=(?:error|fatal) )"
)
# Lines buildah writes after a RUN step ends: the RUN step's output is over.
_AFTER_RUN_RE = re.compile(r"^(?:STEP \d+/\d+: |COMMIT\b|--> |Error: building at STEP |"
                           r"error building at STEP )")
_PATH_RE = re.compile(r"(/[^\s:\"']+)")
# HTTP statuses standing alone (not inside a digest or a port): "registry 503 (...)".
_PERMANENT_STATUS_RE = re.compile(r"(?<![\w:.])(?P<code>401|403)(?![\w:.])")
_TRANSIENT_STATUS_RE = re.compile(r"(?<![\w:.])(?P<code>429|500|502|503|504)(?![\w:.])")


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """How a failed command failed: retry or not, the line that decided, and why."""

    transient: bool
    line: str  # the tool's own error line (or the last line when it wrote none)
    reason: str  # short cause: "connection refused", "RUN step exited with 3", ...
    hint: str = ""  # what to do about it (permanent causes)


def tool_error_lines(lines: Sequence[str]) -> list[str]:
    """The error lines the tool itself wrote, in order; a RUN step's output is skipped."""
    return [line for line in _tool_lines(lines) if _ERROR_LINE_RE.match(line.strip())]


def classify_output(lines: Sequence[str], *, paths: Iterable[str] = ()) -> Verdict:
    """Decide from the tool's last error line; `paths` (its storage, layout) name a full disk.

    With no error line of the tool's own, its last line outside any RUN step decides
    (a short tool message without prefix); output that ends inside a RUN step is permanent.
    """
    own = [line.strip() for line in _tool_lines(lines) if line.strip()]
    errors = [line for line in own if _ERROR_LINE_RE.match(line)]
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if not errors and (not own or own[-1] != last):
        # no error of the tool's own, and the output ends inside a RUN step (or is empty)
        return Verdict(transient=False, line=last or "no output", reason="no tool error")
    line = errors[-1] if errors else own[-1]
    cause = _cause(line, _instructions(lines))
    run_exit = _RUN_EXIT_RE.search(line) if 'building at step "run' in line.lower() else None
    if run_exit:
        return Verdict(transient=False, line=line,
                       reason=f"RUN step exited with {run_exit['code']}",
                       hint="fix the RUN command (its output is above)")
    if ENOSPC in cause.lower():
        return Verdict(transient=False, line=line, reason=disk_full_reason(cause, paths),
                       hint=dict(PERMANENT_CAUSES)[ENOSPC])
    return classify_cause(cause, line=line)


def classify_cause(cause: str, *, line: str) -> Verdict:
    """Permanent causes first, then transient markers; anything unknown is permanent."""
    lowered = cause.lower()
    for marker, hint in PERMANENT_CAUSES:
        if marker in lowered:
            return Verdict(transient=False, line=line, reason=marker, hint=hint)
    if status := _PERMANENT_STATUS_RE.search(lowered):
        return Verdict(transient=False, line=line, reason=f"HTTP {status['code']}",
                       hint="check the registry credentials and the account's permissions")
    for marker in TRANSIENT_MARKERS:
        if marker in lowered:
            return Verdict(transient=True, line=line, reason=marker)
    if status := _TRANSIENT_STATUS_RE.search(lowered):
        return Verdict(transient=True, line=line, reason=f"HTTP {status['code']}")
    return Verdict(transient=False, line=line, reason="unrecognised error")


def is_transient_message(text: str) -> bool:
    """True when a tool's own error message (skopeo's stderr, an HTTP answer) looks passing.

    A whole stderr is narrowed to the tool's own last error line first.
    """
    lines = text.splitlines()
    errors = tool_error_lines(lines)
    return classify_cause(_cause(errors[-1], []) if errors else text, line=text).transient


def disk_full_reason(cause: str, paths: Iterable[str]) -> str:
    """`no space left on device: /x has 52 KiB free of 2.0 MiB`: which disk, how full.

    The path comes from the error when the tool names one (skopeo does), else from the
    step's own directories (buildah's storage root does not appear in its message).
    """
    candidates = [*_PATH_RE.findall(cause), *paths]
    usages = [(path, usage) for path in candidates if (usage := _usage(path)) is not None]
    if not usages:
        return ENOSPC
    path, (total, free) = min(usages, key=lambda item: item[1][1])
    return f"{ENOSPC}: {path} has {_size(free)} free of {_size(total)}"


def step_paths(argv: Sequence[str]) -> list[str]:
    """The directories a step writes: buildah's --root/--runroot, skopeo's oci: layout."""
    found: list[str] = []
    for flag, value in itertools.pairwise(argv):
        if flag in ("--root", "--runroot"):
            found.append(value)
    for arg in argv:
        if arg.startswith("oci:"):
            found.append(arg.removeprefix("oci:").rsplit(":", 1)[0])
    return found


def _tool_lines(lines: Sequence[str]) -> list[str]:
    """Every line except a RUN step's own output."""
    own: list[str] = []
    in_run = False
    for raw in lines:
        line = raw.strip()
        if in_run and not _AFTER_RUN_RE.match(line):
            continue
        step = _STEP_RE.match(line)
        in_run = bool(step and step["instruction"].upper().startswith("RUN"))
        own.append(raw)
    return own


def _instructions(lines: Sequence[str]) -> list[str]:
    return [m["instruction"] for line in lines if (m := _STEP_RE.match(line.strip()))]


def _cause(line: str, instructions: Sequence[str]) -> str:
    """The error without the step text buildah quotes (a RUN command may say anything)."""
    marker = 'building at STEP "'
    start = line.find(marker)
    if start < 0:
        return line
    quoted = line[start + len(marker):]
    for instruction in sorted(instructions, key=len, reverse=True):
        if quoted.startswith(f'{instruction}": '):
            return quoted[len(instruction) + 3:]
    return quoted.partition('": ')[2] or quoted


def _usage(path: str) -> tuple[int, int] | None:
    """(total, free) bytes of the file system holding `path` (or its nearest existing parent)."""
    candidate = Path(path)
    while not candidate.exists() and candidate != candidate.parent:
        candidate = candidate.parent
    try:
        usage = shutil.disk_usage(candidate)
    except OSError:
        return None
    return usage.total, usage.free


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
