"""Unit tests for how a result reads: sizes, the CLI table, the markdown summary, artifact keys."""

from __future__ import annotations

import re

import pytest

from multiarch.platforms import Platform
from multiarch.reporting import artifact_key, human_size, markdown_summary, text_table
from multiarch.results import Attestation, BuildResult, LeftOut, PlatformSummary

AMD_DIGEST = "sha256:" + "a" * 64
ARM_DIGEST = "sha256:" + "b" * 64
INDEX_DIGEST = "sha256:" + "c" * 64


def result(image: str = "127.0.0.1:5000/examples/hello") -> BuildResult:
    return BuildResult(
        image=image,
        index_digest=INDEX_DIGEST,
        tags=["1.0", "latest"],
        platforms=[
            PlatformSummary(
                platform=Platform.parse("linux/amd64"),
                digest=AMD_DIGEST,
                size=1536,
                emulated=False,
                duration_s=12.34,
            ),
            PlatformSummary(
                platform=Platform.parse("linux/arm/v7"),
                digest=ARM_DIGEST,
                size=5 * 1024 * 1024,
                emulated=True,
                duration_s=95.0,
            ),
        ],
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (1024 * 1024 - 1, "1024.0 KiB"),
        (5 * 1024 * 1024, "5.0 MiB"),
        (3 * 1024**3, "3.0 GiB"),
        (2048 * 1024**3, "2048.0 GiB"),
    ],
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text


def test_text_table() -> None:
    lines = text_table(result()).splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["platform", "digest", "size", "duration", "build"]
    amd, arm = lines[1], lines[2]
    assert amd.split()[:2] == ["linux/amd64", AMD_DIGEST]
    assert "1.5 KiB" in amd
    assert "12.3 s" in amd
    assert amd.endswith("native")
    assert arm.split()[:2] == ["linux/arm/v7", ARM_DIGEST]
    assert "5.0 MiB" in arm
    assert "95.0 s" in arm
    assert arm.endswith("emulated (QEMU)")
    # Columns line up: every column starts at the same offset on every line.
    for column in ("digest", "size", "duration", "build"):
        start = lines[0].index(column)
        assert amd[start - 2 : start] == "  " and amd[start] != " "
        assert arm[start - 2 : start] == "  " and arm[start] != " "
    assert all(line == line.rstrip() for line in lines)


def test_markdown_summary() -> None:
    summary = markdown_summary(result())
    lines = summary.splitlines()
    assert lines[0] == "# Published `127.0.0.1:5000/examples/hello`"
    assert f"- index digest: `{INDEX_DIGEST}`" in lines
    assert "- tags: `1.0`, `latest`" in lines
    assert f"- pull: `127.0.0.1:5000/examples/hello@{INDEX_DIGEST}`" in lines
    assert "| platform | digest | size | duration | build |" in lines
    assert f"| linux/amd64 | `{AMD_DIGEST}` | 1.5 KiB | 12.3 s | native |" in lines
    assert f"| linux/arm/v7 | `{ARM_DIGEST}` | 5.0 MiB | 95.0 s | emulated (QEMU) |" in lines
    assert summary.endswith("|\n\nNo SBOM, provenance or signature was attached.\n")


def test_markdown_summary_lists_every_referrer_by_digest() -> None:
    sbom = "sha256:" + "5" * 64
    signature = "sha256:" + "6" * 64
    attested = result().model_copy(update={
        "signed_by": "ABCD" * 10,
        "attestations": [
            Attestation(subject="linux/amd64", kind="sbom", digest=sbom,
                        subject_digest=AMD_DIGEST, size=2048),
            Attestation(subject="index", kind="signature", digest=signature,
                        subject_digest=INDEX_DIGEST, size=377),
        ]})
    lines = markdown_summary(attested).splitlines()
    assert "## Supply chain" in lines
    assert any("signed with GPG key `" + "ABCD" * 10 + "`" in line for line in lines)
    assert f"| linux/amd64 | sbom | `{sbom}` | 2.0 KiB |" in lines
    assert f"| index | signature | `{signature}` | 377 B |" in lines


def left_out_result() -> BuildResult:
    only_amd = result().model_copy(update={"platforms": result().platforms[:1]})
    return only_amd.model_copy(update={"left_out": [LeftOut(
        platform=Platform.parse("linux/arm64"),
        reason="step build exited with 7: this step does not support aarch64")]})


def test_the_tables_name_a_left_out_platform_and_why() -> None:
    lines = text_table(left_out_result()).splitlines()
    assert [line.split()[0] for line in lines] == ["platform", "linux/amd64", "linux/arm64"]
    assert lines[2].split()[1:4] == ["-", "-", "-"]
    assert lines[2].endswith("left out: step build exited with 7: this step does not support "
                             "aarch64")


def test_markdown_summary_says_the_index_was_published_without_a_platform() -> None:
    lines = markdown_summary(left_out_result()).splitlines()
    assert "- left out: `linux/arm64` (optional, failed: see below)" in lines
    assert not any(line.startswith("| linux/arm64") for line in lines)  # not in the index
    assert "## Left out" in lines
    assert ("- **linux/arm64**: step build exited with 7: this step does not support aarch64"
            in lines)
    assert "## Left out" not in markdown_summary(result())


@pytest.mark.parametrize(
    ("image", "key"),
    [
        ("127.0.0.1:5000/examples/hello", "hello"),
        ("registry.example.com/team/my_app.v2", "my-app-v2"),
        ("localhost/a__b--c", "a--b--c"),
        ("localhost:5000/app", "app"),
    ],
)
def test_artifact_key(image: str, key: str) -> None:
    produced = artifact_key(result(image))
    assert produced == key
    assert re.fullmatch(r"[a-z0-9-]+", produced)


def test_artifact_key_never_empty() -> None:
    assert artifact_key(result("localhost/...")) == "image"


@pytest.mark.parametrize(
    "image",
    ["registry.example.com/Team/App", "r.io/x_y.z-w", "r.io/a/B.C", "r.io/ap%p", "r.io/-x-"],
)
def test_artifact_key_charset(image: str) -> None:
    assert re.fullmatch(r"[a-z0-9]+(?:-+[a-z0-9]+)*", artifact_key(result(image)))


def test_the_cli_says_which_platform_was_left_out_and_why(capsys) -> None:
    from multiarch.cli import build_parser, run_build

    args = build_parser().parse_args([
        "build", "--image", "127.0.0.1:5000/examples/hello", "--platform", "linux/amd64",
        "--platform", "linux/arm64", "--optional-platform", "linux/arm64",
        "--context", "examples/hello"])
    assert run_build(args, lambda parameters: left_out_result()) == 0
    out = capsys.readouterr().out
    assert ("left out linux/arm64 (optional, it failed): step build exited with 7: this step "
            "does not support aarch64") in out
