"""Every exception the bridge raises on purpose.

Each carries the fields a reader needs to act (config key, topic/partition/offset, error code).
Whether an error is retryable is decided once, where it is raised, never by the catcher.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of the bridge's own errors."""


class ConfigError(BridgeError):
    """The configuration file or an override is invalid.

    Attributes:
        problems: One line per problem, each naming the key, the bad value and what is allowed.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration in {source}:\n{lines}")


class OptionError(ConfigError):
    """A command-line option is invalid (exit 2, like a configuration error): one line per
    problem, each naming the option, the bad value and what is allowed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("the command line", problems)
        self.args = ("; ".join(problems),)

    def __str__(self) -> str:
        return "; ".join(self.problems)


class CredentialsError(BridgeError):
    """AWS credentials cannot be had at start: none in the default chain, or STS refused the
    role. The deployment has to change (exit 2, like a configuration error): a restart alone
    will not help. The message never holds a key, a token or the external id.
    """


class MappingError(BridgeError):
    """A record cannot be turned into an event entry; it goes to the dead-letter topic.

    Attributes:
        code: A short stable reason code (e.g. ``ValueNotJson``, ``DetailTypeTooLong``).
        stage: Where it failed: ``decode``, ``map`` or ``validate``.
    """

    def __init__(self, code: str, message: str, stage: str = "map") -> None:
        self.code = code
        self.stage = stage
        self.message = message
        super().__init__(f"{code}: {message}")


class TemplateError(BridgeError):
    """A template in the config cannot be compiled (reported at load, never at run time)."""


class DeadLetterError(BridgeError):
    """The dead-letter topic did not acknowledge a write; the offset stays uncommitted."""


class KafkaFatalError(BridgeError):
    """The Kafka consumer hit a fatal error: it will never consume again, so the process ends
    (exit 1) and its supervisor (Kubernetes) starts it again. Nothing consumed and not committed
    is lost: the next process reads it again.

    Attributes:
        code: librdkafka's error name (``_FATAL`` when it reports the fatal state itself).
        reason: librdkafka's description, naming the underlying error.
        hint: What to do about it, when the bridge knows (else empty).
    """

    def __init__(self, code: str, reason: str, hint: str = "") -> None:
        self.code = code
        self.reason = reason
        self.hint = hint
        text = f"the Kafka consumer hit a fatal error and cannot go on ({code}: {reason})"
        super().__init__(f"{text}; {hint}" if hint else text)


class LocalServiceError(BridgeError):
    """A local development service (broker, endpoint) could not be started."""


class FilteredOut(Exception):
    """A record the mapping drops on purpose; its offset is finished without sending anything.

    Raised by ``Mapper.map``. Not a :class:`BridgeError`: nothing is wrong.

    Attributes:
        reason: ``filter`` (the mapping's filter is false), ``tombstone`` (null value with
            ``tombstones: skip``) or ``null_key`` (null key with ``null_keys: skip``).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
