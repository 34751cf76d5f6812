"""Build secrets through the real buildah, as a user runs `multiarch build`: the RUN step
sees each secret (a file, an environment variable, a Prefect Secret block), and afterwards
no value is anywhere: not in the pushed image (every blob of it, layers decompressed, its
config and history, and every other blob the registry holds: SBOM, provenance), not in
the run's work directory, not in the CLI's output, not in the Prefect server's database.
`--ssh` and `--build-context` reach buildah too, and a secret that is missing is refused
before any build starts.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import read_image_file

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_NAME = "MULTIARCH_TEST_BUILD_SECRET"
# Three values with characters no hex digest has, so a digest of one never matches it.
FILE_VALUE = f"file-{uuid.uuid4().hex}-Zq!"
ENV_VALUE = f"env-{uuid.uuid4().hex}-Zq!"
BLOCK_VALUE = f"block-{uuid.uuid4().hex}-Zq!"
VALUES = (FILE_VALUE, ENV_VALUE, BLOCK_VALUE)

CONTAINERFILE = """\
ARG BASE
FROM ${BASE}
RUN --mount=type=secret,id=tok --mount=type=secret,id=envtok \\
    --mount=type=secret,id=blocktok \\
    for s in tok envtok blocktok; do test -s /run/secrets/$s || exit 1; done && \\
    cat /run/secrets/tok > /dev/null && \\
    sha256sum /run/secrets/tok /run/secrets/envtok /run/secrets/blocktok \\
      | cut -d' ' -f1 > /secret-digests
# a careless step that prints a secret: the log shows it masked
RUN --mount=type=secret,id=envtok cat /run/secrets/envtok; echo
RUN test ! -s /run/secrets/tok && echo "no secret outside its step"
"""


def run_cli(*args: str, api_url: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    environment.update({"PREFECT_API_URL": api_url, **(env or {})})
    return subprocess.run([sys.executable, "-m", "flows.cli", "build", *args],
                          capture_output=True, text=True, timeout=900, env=environment,
                          cwd=REPO_ROOT, check=False)


def decoded(data: bytes) -> Iterator[bytes]:
    """A blob as stored, and decompressed when it is a compressed layer."""
    yield data
    if data[:2] == b"\x1f\x8b":
        yield gzip.decompress(data)
    elif data[:4] == b"\x28\xb5\x2f\xfd":  # zstd: not what builds here write; say so
        pytest.fail("a zstd layer: this test cannot read it")


def files_holding(root: Path, values: tuple[str, ...]) -> list[str]:
    """Every file under `root` (blobs decompressed) that contains one of `values`."""
    wanted = [v.encode() for v in values]
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        for data in decoded(path.read_bytes()):
            if any(v in data for v in wanted):
                found.append(str(path.relative_to(root)))
                break
    return found


def database_text() -> bytes:
    """The Prefect test server's SQLite database as bytes, with its write-ahead log."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url and url.startswith("sqlite"), url
    path = Path(url.split(":///", 1)[1])
    return b"".join(Path(f"{path}{suffix}").read_bytes() for suffix in ("", "-wal")
                    if Path(f"{path}{suffix}").exists())


@pytest.fixture
def secret_block(prefect_server) -> Iterator[str]:
    from prefect.blocks.system import Secret

    name = f"multiarch-test-{uuid.uuid4().hex[:10]}"
    Secret(value=BLOCK_VALUE).save(name)
    yield name
    Secret.delete(name)


@pytest.mark.parametrize("toolchain", ["host", "debian13"])
def test_run_steps_see_build_secrets_and_no_value_stays_anywhere(
        playground, prefect_server, secret_block, tmp_path, toolchain):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(CONTAINERFILE)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    token_file = secrets_dir / "token"
    token_file.write_text(FILE_VALUE)
    work = tmp_path / "work"
    repository = f"tests/secrets-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"

    done = run_cli(
        "--image", image, "--platform", "linux/amd64", "--context", str(context),
        "--build-arg", f"BASE={playground.base}", "--build-arg", "API_TOKEN=not-a-secret",
        "--secret", f"id=tok,src={token_file}", "--secret", f"id=envtok,env={ENV_NAME}",
        "--secret", f"id=blocktok,block={secret_block}",
        "--insecure-registry", "--work-dir", str(work), "--json", "--toolchain", toolchain,
        api_url=prefect_server, env={ENV_NAME: ENV_VALUE})
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert ("Debian 13 toolchain" in result["platforms"][0]["builder"]) == (
        toolchain == "debian13")
    output = done.stdout + done.stderr

    # The RUN step saw each value: their digests are in the image, the values are not.
    digests = read_image_file(image, "/secret-digests", scratch=tmp_path).decode().split()
    assert digests == [hashlib.sha256(v.encode()).hexdigest() for v in VALUES]
    assert "no secret outside its step" in output
    assert "***" in output  # the step that printed one: masked in the log
    assert "build_args: WARNING: API_TOKEN looks like a secret" in output

    # The pushed image, every blob (layers decompressed, config with its history), pulled
    # to an OCI layout; then every blob the registry holds (SBOM and provenance included).
    layout = tmp_path / "pulled-all"
    subprocess.run(["skopeo", "copy", "--all", "--quiet", "--src-tls-verify=false",
                    f"docker://{image}", f"oci:{layout}:all"], check=True, timeout=300,
                   capture_output=True)
    blobs = list((layout / "blobs" / "sha256").iterdir())
    assert len(blobs) >= 4  # index, manifest, config, layers
    assert files_holding(layout, VALUES) == []
    assert files_holding(layout, (digests[0],))  # the search reads inside the layers
    config = next(json.loads(b.read_bytes()) for b in blobs
                  if b.read_bytes()[:1] == b"{" and b'"history"' in b.read_bytes())
    history = json.dumps(config["history"])
    assert "--mount=type=secret,id=tok" in history  # the RUN text is there, not the values
    assert result["index_digest"]
    assert {a["kind"] for a in result["attestations"]} == {"sbom", "provenance"}
    assert files_holding(playground.registry.data_dir, VALUES) == []

    # The run's work directory afterwards: no block file, no buildah secret copy, nothing.
    assert files_holding(work, VALUES) == []
    assert not list(work.rglob("secrets/blocktok"))

    # The CLI's output.
    for value in VALUES:
        assert value not in output

    # The Prefect server's database: parameters, logs, states, artifacts. It holds the
    # references (so the search is over the right rows), never a value; the Secret block
    # itself is stored encrypted by Prefect.
    stored = database_text()
    assert f"id=envtok,env={ENV_NAME}".encode() in stored
    assert f"id=tok,src={token_file}".encode() in stored
    assert b"secrets: tok from file" in stored  # a log line of this run: logs are searched
    for value in VALUES:
        assert value.encode() not in stored


@pytest.mark.parametrize("toolchain", ["host", "debian13"])
def test_ssh_and_build_context_reach_buildah(playground, prefect_server, tmp_path, toolchain):
    assert shutil.which("ssh-agent"), "ssh-agent is missing: make deps installs openssh-client"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        "ARG BASE\nFROM ${BASE}\n"
        "RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && echo forwarded > /ssh-agent\n"
        "COPY --from=extra note.txt /extra-note.txt\n")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "note.txt").write_text("from the extra context\n")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.run(["ssh-agent", "-a", str(socket_path), "-s"], check=True,
                           capture_output=True, text=True, timeout=30).stdout
    agent_pid = int(agent.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    image = f"{playground.address}/tests/ssh-{uuid.uuid4().hex[:8]}:1"
    try:
        done = run_cli(
            "--image", image, "--platform", "linux/amd64", "--context", str(context),
            "--build-arg", f"BASE={playground.base}", "--ssh", "default",
            "--build-context", f"extra={extra}", "--no-sbom", "--no-provenance",
            "--insecure-registry", "--work-dir", str(tmp_path / "work"), "--json",
            "--toolchain", toolchain,
            api_url=prefect_server, env={"SSH_AUTH_SOCK": str(socket_path)})
    finally:
        os.kill(agent_pid, signal.SIGTERM)
    assert done.returncode == 0, done.stderr[-4000:]
    assert read_image_file(image, "/ssh-agent", scratch=tmp_path) == b"forwarded\n"
    (tmp_path / "again").mkdir()
    assert read_image_file(image, "/extra-note.txt", scratch=tmp_path / "again") == \
        b"from the extra context\n"


@pytest.mark.parametrize(("extra", "expected"), [
    (("--secret", f"id=tok,env={ENV_NAME}"),
     f"multiarch: secrets.0: id=tok,env={ENV_NAME}: the environment variable {ENV_NAME} is "
     "not set"),
    (("--secret", "id=tok,src=/nonexistent/token"),
     "multiarch: secrets.0: id=tok,src=/nonexistent/token: cannot read /nonexistent/token"),
    ((), "multiarch: secrets: Containerfile line 3: RUN --mount=type=secret,id=tok needs "
     "secret 'tok', which this build does not give"),
    (("--secret-build-arg", "TOKEN"),
     "multiarch: invalid request: supply_chain.secret_build_args: removed:"),
])
def test_a_missing_secret_is_refused_before_any_build(playground, prefect_server, tmp_path,
                                                      extra, expected):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Containerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n")
    work = tmp_path / "work"
    done = run_cli("--image", f"{playground.address}/tests/refused:1", "--platform",
                   "linux/amd64", "--context", str(context), "--build-arg",
                   f"BASE={playground.base}", "--insecure-registry", "--work-dir", str(work),
                   *extra, api_url=prefect_server)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("multiarch: ")]
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(expected), lines[0]
    assert not (work / "builds").exists(), "a build started"
