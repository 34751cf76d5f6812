"""The validated build request: everything a run needs, checked before any work starts.

The CLI, the flow's parameters and (later) deployments all go through `BuildRequest`, so
a bad platform or tag fails with the same message, naming the field, wherever it came from.
Registry credentials are deliberately absent: they come from the registry auth file of
the machine or pod that pushes, never from a parameter.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from multiarch.build_secrets import BuildSecret, SshSource
from multiarch.build_secrets import check_request as check_build_secrets_request
from multiarch.containerfile import BUILD_ARG_NAME_RE
from multiarch.handoff import HANDOFFS
from multiarch.parameters import Cli
from multiarch.platforms import Platform
from multiarch.references import DEFAULT_TAG, ImageReference, check_tag
from multiarch.runners import RUNNERS
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.supplychain import SupplyChainOptions

GIT_URL_RE = re.compile(r"^(?:https?|ssh|git|file)://|^[\w.-]+@[\w.-]+:")
STAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_path_for_oci(path: str) -> None:
    """Refuse paths that container references would cut short or misread.

    skopeo's `oci:PATH:REF` splits at the first `:`, so `/a:b` would write a layout into
    `/a` (outside the directory asked for); the build store is named to skopeo as
    `containers-storage:[DRIVER@ROOT+RUNROOT]`, where `@`, `+`, `[` and `]` are separators.
    Refusing is safer than escaping: no escape exists in either syntax.
    """
    if ":" in path:
        raise ValueError(
            f"{path!r} contains ':', which skopeo's oci:PATH:TAG reference splits on (the "
            "layout would land elsewhere): choose a directory without ':'"
        )
    bad = sorted({c for c in path if c in "@+[]"})
    if bad:
        raise ValueError(
            f"{path!r} contains {' '.join(bad)}, separators of the containers-storage:"
            "[DRIVER@ROOT+RUNROOT] reference: choose a directory without them"
        )


def is_git_url(context: str) -> bool:
    """A URL git understands; a plain path is a local context even if it ends in .git."""
    return bool(GIT_URL_RE.search(context))


IndexFormat = Literal["oci", "docker"]


class RunnerOptions(BaseModel):
    """How and where the per-platform steps run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Annotated[Literal[tuple(RUNNERS)], Cli("--runner")] = Field(  # type: ignore[valid-type]
        "local",
        description="Where builds run: `local` (subprocesses on this machine) or "
        "`kubernetes` (one Job per platform on a node of that architecture).",
    )
    work_dir: str | None = Field(
        None,
        description="Local scratch space (container storage, checkouts); "
        "default $MULTIARCH_WORK_DIR or /var/tmp/multiarch.",
    )
    shared_dir: str | None = Field(
        None,
        description="Handoff directory for the per-platform OCI layouts; "
        "default <work_dir>/shared.",
    )
    timeout_s: Annotated[int, Cli("--timeout")] = Field(
        3600, gt=0, description="Wall-clock limit for one platform's build (seconds).")
    storage_driver: Literal["overlay", "vfs"] = Field(
        "overlay", description="Container storage driver for the local build store."
    )
    keep_shared: bool = Field(
        False, description="Keep the run's handoff directory after a successful publish."
    )
    toolchain: Literal["host", "debian13"] = Field(
        "host", description="The buildah and skopeo the local runner builds with: `host` "
        "(this machine's packages) or `debian13` (Debian 13's buildah 1.39 and skopeo 1.18, "
        "from a trixie root filesystem mmdebstrap builds once and caches under "
        "~/.cache/multiarch-builder/toolchain: heredocs, ADD --checksum, RUN --network). "
        "Kubernetes pods run their builder image's.")
    kubernetes: KubernetesOptions = Field(
        default_factory=KubernetesOptions, description="Options of the kubernetes runner."
    )
    git_credentials_block: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding git credentials "
        "(https://USER:TOKEN@HOST lines) for a git context; never the credentials themselves.",
    )

    @model_validator(mode="after")
    def _toolchain_is_local(self) -> RunnerOptions:
        if self.kind != "local" and self.toolchain != "host":
            raise ValueError(
                f"toolchain: {self.toolchain} is for the local runner; {self.kind} builds run "
                "their builder image's tools: leave toolchain out (or set builder_image)")
        return self

    @field_validator("work_dir", "shared_dir")
    @classmethod
    def _usable_path(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.strip():
                raise ValueError("is empty: give a directory, or leave it out for the default")
            check_path_for_oci(value)
        return value


class BuildRequest(BaseModel):
    """One multi-architecture build and publish."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: ImageReference = Field(description="Push target, registry/repository[:tag].")
    tags: Annotated[tuple[str, ...], Cli("--tag")] = Field(
        (), description="More tags for the same index.")
    platforms: Annotated[tuple[Platform, ...], Cli("--platform")] = Field(
        min_length=1, description="Target platforms, os/arch[/variant]."
    )
    optional_platforms: Annotated[tuple[Platform, ...], Cli("--optional-platform")] = Field(
        (), description="Platforms (each also in platforms) the index may go without: when "
        "only these fail, after their retries, the others are published and the result says "
        "which were left out and why; a required platform failing publishes nothing.")
    context: str = Field(description="Build context: a local directory or a git URL.")
    git_ref: str | None = Field(
        None, description="Branch, tag or commit of a git context (default: HEAD)."
    )
    containerfile: Annotated[str | None, Cli("--file")] = Field(
        None, description="Containerfile path relative to the context (default: buildah's)."
    )
    build_args: Annotated[dict[str, str], Cli("--build-arg")] = Field(
        default_factory=dict, description="Build arguments (KEY=value); values reach buildah "
        "verbatim.")
    secrets: Annotated[tuple[BuildSecret, ...], Cli("--secret")] = Field(
        (), description="Build secrets for RUN --mount=type=secret,id=ID (a file at "
        "/run/secrets/ID in that step only; never in the image, its history or a log): "
        "id=ID,src=FILE (a file of the machine that builds), id=ID,env=VAR (a variable of the "
        "build process) or id=ID,block=BLOCK (a Prefect Secret block). Only the id and where "
        "the value comes from are parameters, never the value. Local runner; on kubernetes "
        "use runner.kubernetes.build_secrets. A mounted id that no secret gives is refused "
        "unless the mount says required=false.")
    ssh: Annotated[tuple[SshSource, ...], Cli("--ssh")] = Field(
        (), description="SSH agent forwarding for RUN --mount=type=ssh, as buildah takes it: "
        "default (the agent of $SSH_AUTH_SOCK), ID, or ID=SOCKET|KEY[,KEY]; local runner only.")
    build_contexts: Annotated[dict[str, str], Cli("--build-context")] = Field(
        default_factory=dict, description="Extra build contexts for COPY --from=NAME and FROM "
        "NAME (NAME=DIR, NAME=docker-image://REF, container-image://REF or an https:// "
        "tarball URL); a DIR on the local runner only; not with rebuild if-changed.")
    labels: Annotated[dict[str, str], Cli("--label")] = Field(
        default_factory=dict, description="Image labels (KEY=value).")
    target: str | None = Field(None, description="Build stage to stop at.")
    allow_emulation: bool = Field(
        False, description="Allow QEMU emulation for platforms this host cannot run natively."
    )
    allow_secret_files: bool = Field(
        False, description="Build even though COPY/ADD would copy a .git/config holding a "
        "credential into the image (no ignore file excludes it); secret-looking files are "
        "still named in a warning.")
    insecure_registry: bool = Field(
        False, description="Skip TLS verification (plain HTTP allowed) for registries."
    )
    rebuild: Literal["always", "if-changed"] = Field(
        "always",
        description="always: build every run; if-changed: skip when the tag already holds "
        "this source revision, Containerfile/build args and base image digests.",
    )
    handoff: Literal[tuple(HANDOFFS)] = Field(  # type: ignore[valid-type]
        "shared",
        description="How platform images reach publish: shared (OCI layouts on a shared "
        "directory or volume) or registry (each build pushes its image by digest; publish "
        "only writes the index and the tags; no shared volume).",
    )
    index_format: IndexFormat = Field(
        "oci",
        description="What the tags hold: oci (an OCI image index) or docker (a Docker "
        "manifest list over Docker V2 schema 2 manifests of the same blobs, for registries "
        "that reject OCI indexes; gzip layers only).",
    )
    image_format: Annotated[Literal["oci", "docker"], Cli("--format")] = Field(
        "oci",
        description="The image config format: oci, or docker (a Docker image config, which "
        "alone keeps HEALTHCHECK, ONBUILD and SHELL; exported and published as Docker V2 "
        "schema 2 manifests, so index_format is docker).",
    )
    cache: Literal["none", "registry"] = Field(
        "none",
        description="Layer cache: none, or registry (buildah --layers with a cache "
        "repository per architecture, <repository>/cache-<arch>, reused by every node).",
    )
    source_date_epoch: int | None = Field(
        None,
        ge=0,
        description="Timestamp (epoch seconds) of every image, layer file and the index; "
        "default: the pinned commit's time, or a local context's newest file time.",
    )
    runner: RunnerOptions = Field(default_factory=RunnerOptions,
                                  description="Where builds run and how (RunnerOptions).")
    supply_chain: SupplyChainOptions = Field(
        default_factory=SupplyChainOptions,
        description="SBOM, provenance and signatures attached at publish (SupplyChainOptions).")

    @field_validator("platforms", "optional_platforms")
    @classmethod
    def _unique_platforms(cls, value: tuple[Platform, ...]) -> tuple[Platform, ...]:
        seen: set[str] = set()
        for platform in value:
            if str(platform) in seen:
                raise ValueError(f"platform {platform} is listed twice")
            seen.add(str(platform))
        return value

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            check_tag(tag)
        return value

    @field_validator("build_args")
    @classmethod
    def _valid_build_arg_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not BUILD_ARG_NAME_RE.match(name):
                raise ValueError(
                    f"build arg name {name!r} is invalid: use letters, digits and _ "
                    "(the value may contain anything)"
                )
        return value

    @field_validator("labels")
    @classmethod
    def _valid_label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not key or any(c.isspace() for c in key) or "=" in key:
                raise ValueError(f"label key {key!r} must be non-empty, without spaces or '='")
        return value

    @field_validator("target")
    @classmethod
    def _valid_target(cls, value: str | None) -> str | None:
        if value is not None and not STAGE_RE.match(value):
            raise ValueError(f"target stage {value!r} is not a valid stage name")
        return value

    @field_validator("containerfile")
    @classmethod
    def _relative_containerfile(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts):
            raise ValueError(
                f"containerfile {value!r} must be a path inside the context, relative to it"
            )
        return value

    @model_validator(mode="after")
    def _check_optional_platforms(self) -> BuildRequest:
        """Optional platforms are a subset of the platforms, and never all of them: a run
        whose every platform may fail could succeed having published nothing."""
        listed = [str(p) for p in self.platforms]
        for platform in self.optional_platforms:
            if str(platform) not in listed:
                raise ValueError(
                    f"optional_platforms: {platform} is not one of platforms "
                    f"({', '.join(listed)}): add it to platforms or drop it from "
                    "optional_platforms")
        if len(self.optional_platforms) == len(self.platforms):
            raise ValueError(
                "optional_platforms: every platform is optional, so a run could publish "
                "nothing: keep at least one platform required (drop one from optional_platforms)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _docker_images_get_a_docker_index(cls, data: object) -> object:
        """`image_format: docker` alone means a Docker manifest list too (index_format
        docker); asking for an OCI index over it is refused by `_check_formats`."""
        if (isinstance(data, dict) and data.get("image_format") == "docker"
                and data.get("index_format") is None):
            return {**data, "index_format": "docker"}
        return data

    @model_validator(mode="after")
    def _check_formats(self) -> BuildRequest:
        if self.image_format == "docker" and self.index_format != "docker":
            raise ValueError(
                "index_format: oci cannot hold the Docker image manifests of image_format "
                "docker: drop index_format (or set it to docker), or build oci images")
        return self

    @model_validator(mode="after")
    def _check_build_secrets(self) -> BuildRequest:
        check_build_secrets_request(self)  # multiarch.build_secrets
        return self

    @model_validator(mode="after")
    def _check_context(self) -> BuildRequest:
        """Cross-field checks; messages start with the field they concern."""
        self._check_signing()
        if self.is_git:
            return self
        if self.runner.kind == "kubernetes":
            raise ValueError(
                f"context: {self.context!r} is a local directory, which pods on other nodes "
                "cannot see: the kubernetes runner builds from a git URL"
            )
        if self.git_ref is not None:
            raise ValueError(
                "git_ref: set, but context is a local directory: give a git URL as "
                "context, or drop git_ref"
            )
        directory = Path(self.context)
        if not directory.is_dir():
            raise ValueError(
                f"context: {self.context!r} is neither an existing directory nor a git URL"
            )
        if self.containerfile and not (directory / self.containerfile).is_file():
            raise ValueError(
                f"containerfile: {self.containerfile!r} does not exist in context {self.context!r}"
            )
        if not self.containerfile and not any(
            (directory / name).is_file() for name in ("Containerfile", "Dockerfile")
        ):
            raise ValueError(
                f"context: {self.context!r} has no Containerfile or Dockerfile: add one or "
                "set containerfile"
            )
        return self

    def _check_signing(self) -> None:
        chain = self.supply_chain
        if chain.sign_key_file and chain.sign_key_block:
            raise ValueError("supply_chain.sign_key_block: sign_key_file is set too: name the "
                             "key once")
        if self.runner.kind == "kubernetes" and chain.signs_locally:
            given = "sign_key_file" if chain.sign_key_file else "sign_key_block"
            raise ValueError(
                f"supply_chain.{given}: the kubernetes runner signs in its publish pod, "
                "which gets the key only from a Secret: set "
                "runner.kubernetes.signing_key_secret instead")
        if self.runner.kind != "kubernetes" and self.runner.kubernetes.signing_key_secret:
            raise ValueError(
                "runner.kubernetes.signing_key_secret: set, but the runner is "
                f"{self.runner.kind}: use supply_chain.sign_key_file or sign_key_block")

    @property
    def is_git(self) -> bool:
        return is_git_url(self.context)

    @property
    def all_tags(self) -> tuple[str, ...]:
        """The image's own tag first, then the extra tags, without repeats."""
        ordered = [self.image.tag or DEFAULT_TAG, *self.tags]
        return tuple(dict.fromkeys(ordered))

    def is_optional(self, platform: Platform) -> bool:
        """May the index be published without this platform (optional_platforms)?"""
        return str(platform) in {str(p) for p in self.optional_platforms}


def describe_validation_error(error: ValidationError) -> str:
    """All problems on one line, each naming its field: `platforms.1: platform ... (fix)`.

    Cross-field checks have no location of their own; their messages start with the field.
    """
    items = error.errors()
    lines = []
    for item in items:
        if item["type"] == "too_short" and _has_item_errors(item["loc"], items):
            continue  # pydantic's echo of an item refused above ("at least 1 item ...")
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "too_short":
            message = "none given: name at least one (e.g. --platform linux/amd64)"
        field = ".".join(str(part) for part in item["loc"])
        lines.append(f"{field}: {message}" if field else message)
    return "; ".join(lines)


def _has_item_errors(loc: tuple[int | str, ...], items: list[ErrorDetails]) -> bool:
    return any(len(other["loc"]) > len(loc) and other["loc"][: len(loc)] == loc
               for other in items)
