"""The partial-failure policy: which failed platforms a run may publish without.

A platform in `optional_platforms` that fails (after its retries) is left out: the index
is published over the platforms that built, and the result says which were left out and
why. A required platform failing publishes nothing, and the error names every failed
platform, optional ones too, so one message tells the whole story. The flow (Prefect
tasks) and the plain path (threads) collect their failures each their own way, then both
hand them to `settle`: the policy is written here once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from multiarch.errors import MultiarchError
from multiarch.platforms import Platform
from multiarch.request import BuildRequest
from multiarch.results import LeftOut, PlatformImage

Failure = tuple[Platform, BaseException | str]


class PlatformsFailed(MultiarchError):
    """A required platform failed; nothing was published. `platforms`: every platform that
    failed, optional ones too (the failure event lists them)."""

    def __init__(self, message: str, platforms: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.platforms = tuple(platforms)


@dataclass(frozen=True, kw_only=True)
class Built:
    """What the builds handed over: the images to publish, and the platforms left out."""

    images: list[PlatformImage]
    left_out: list[LeftOut] = field(default_factory=list)


def settle(request: BuildRequest, images: Sequence[PlatformImage],
           failures: Sequence[Failure], *, warn: Callable[[str], None]) -> Built:
    """Publish without the failed platforms if all of them are optional (each is warned
    about); else raise PlatformsFailed naming each failed platform and why."""
    total = len(images) + len(failures)
    if any(not request.is_optional(platform) for platform, _ in failures):
        raise PlatformsFailed(failure_summary(failures, total, request=request),
                              platforms=[str(platform) for platform, _ in failures])
    left_out = [LeftOut(platform=platform, reason=reason_text(platform, reason))
                for platform, reason in failures]
    for item in left_out:
        warn(f"{item.platform} is left out of the index (optional, it failed): {item.reason}")
    return Built(images=list(images), left_out=left_out)


def failure_summary(failures: Sequence[Failure], total: int, *, request: BuildRequest) -> str:
    """`2 of 2 platforms failed, nothing was published: ...`; failed optional platforms are
    named, so it is clear they are not why nothing was published."""
    optional = [str(p) for p, _ in failures if request.is_optional(p)]
    why = (f" (a required platform failed; {', '.join(optional)} "
           f"{'is' if len(optional) == 1 else 'are'} optional)") if optional else ""
    return (f"{len(failures)} of {total} platforms failed, nothing was published{why}: "
            + "; ".join(str(reason) for _, reason in failures))


def reason_text(platform: Platform, reason: BaseException | str) -> str:
    """The error without the `[linux/arm64]: ` the build put in front: the platform is a
    field of its own in the result."""
    return str(reason).removeprefix(f"[{platform}]: ").removeprefix(f"[{platform}] ")
