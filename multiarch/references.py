"""Image references for the push target: `registry/repository[:tag]`.

The target must name its registry host. Docker's implicit `docker.io/library/` prefix is
a frequent source of "pushed to the wrong place" surprises, and a build tool that
publishes should say exactly where. The grammar follows the distribution reference spec.
"""

from __future__ import annotations

import re
from typing import Any

from multiarch.textvalue import TextValue

# distribution/reference: path components, tag, and a registry host with optional port.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"{_LABEL}(?:\.{_LABEL})*"
REGISTRY_RE = re.compile(rf"^(?:{_HOST}|\[[0-9A-Fa-f:]+\])(?::[0-9]{{1,5}})?$")
DEFAULT_TAG = "latest"
MAX_PORT = 65535


class ImageReference(TextValue):
    """Where the multi-arch index goes; written and read as `registry/repo[:tag]`."""

    registry: str
    repository: str
    tag: str | None = None

    @classmethod
    def fields_from_text(cls, text: str) -> dict[str, Any]:
        return parse_reference_fields(text)

    def check(self) -> None:
        check_registry(self.registry)
        check_repository(self.repository)
        if self.tag is not None:
            check_tag(self.tag)

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else self.name

    @property
    def name(self) -> str:
        """`registry/repository`, without tag."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> str:
        return f"{self.name}:{tag}"

    def with_digest(self, digest: str) -> str:
        return f"{self.name}@{digest}"


def parse_reference_fields(text: str) -> dict[str, str | None]:
    text = text.strip()
    if "@" in text:
        raise ValueError(
            f"image {text!r} carries a digest: a push target is a name and tag, "
            "e.g. registry.example.com/team/app:1.2"
        )
    if "/" not in text:
        raise ValueError(
            f"image {text!r} has no registry host: write it in full, "
            "e.g. registry.example.com/team/app or 127.0.0.1:5000/examples/hello"
        )
    registry, rest = text.split("/", 1)
    if not ("." in registry or ":" in registry or registry == "localhost"):
        raise ValueError(
            f"image {text!r} does not start with a registry host ({registry!r} looks like a "
            f"namespace): write e.g. docker.io/{text} or 127.0.0.1:5000/{text}"
        )
    tag: str | None = None
    if ":" in rest:
        rest, tag = rest.rsplit(":", 1)
    return {"registry": registry, "repository": rest, "tag": tag}


def check_registry(registry: str) -> None:
    if not REGISTRY_RE.match(registry):
        raise ValueError(f"registry host {registry!r} is not a valid host[:port]")
    host, sep, port = registry.rpartition(":")
    if sep and not host.endswith(":") and port.isdigit() and not 1 <= int(port) <= MAX_PORT:
        raise ValueError(
            f"registry port {port} in {registry!r} is out of range: use a port from 1 to "
            f"{MAX_PORT}, e.g. {host}:5000"
        )


def check_repository(repository: str) -> None:
    if not REPOSITORY_RE.match(repository):
        raise ValueError(
            f"repository {repository!r} is invalid: use lowercase letters, digits and "
            "separators (. _ - /), e.g. team/app"
        )
    if len(repository) > 255:
        raise ValueError(f"repository {repository[:40]!r}... is longer than 255 characters")


def check_tag(tag: str) -> None:
    if not TAG_RE.match(tag):
        raise ValueError(
            f"tag {tag!r} is invalid: up to 128 characters of letters, digits, _ . -, "
            "not starting with . or -"
        )
