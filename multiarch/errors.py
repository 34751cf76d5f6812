"""One small error hierarchy: permanent versus transient.

Prefect retries a build task only when the exception is a `TransientError`; everything
else fails the platform at once. Every message says what failed, why, and what to do.
"""

from __future__ import annotations


class MultiarchError(Exception):
    """Base class: a failure this project understands and can explain."""


class PermanentError(MultiarchError):
    """Retrying would fail the same way (bad input, a RUN step exiting non-zero)."""


class TransientError(MultiarchError):
    """The same work may succeed if tried again (network blips, evicted pods)."""


class ConfigurationError(PermanentError):
    """The request or the machine is not set up for what was asked; nothing was started."""


class StepFailure(MultiarchError):
    """A plan step exited badly; carries the step, its exit code and its last lines."""

    def __init__(self, message: str, *, step: str, exit_code: int | None, tail: list[str]) -> None:
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code
        self.tail = tail

    def __reduce__(self) -> tuple[object, ...]:
        # keyword-only arguments do not survive the default exception pickling, and Prefect
        # may persist a failed task's exception
        return (_restore, (type(self), str(self), self.step, self.exit_code, self.tail))


def _restore(cls: type[StepFailure], message: str, step: str, exit_code: int | None,
             tail: list[str]) -> StepFailure:
    return cls(message, step=step, exit_code=exit_code, tail=tail)


class StepFailed(StepFailure, PermanentError):
    """A step failed for a reason that will not go away by retrying (a RUN exiting 1)."""


class TransientStepFailure(StepFailure, TransientError):
    """A step failed in a way that looks passing (registry 503, connection reset)."""


class PublishError(PermanentError):
    """The registry did not end up holding exactly what was computed."""
