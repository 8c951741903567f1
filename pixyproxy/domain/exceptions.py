"""Every exception PixyProxy raises, rooted at ImageGenerationException.

Exceptions carry what happened and the offending value; they carry no HTTP status:
the HTTP mapping lives once, in the http entrypoint, so the CLI can reuse them.
"""

from __future__ import annotations


class ImageGenerationException(Exception):
    """Root of every error PixyProxy raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ImageGenerationException):
    """The request is malformed or breaks a documented limit."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(f"{field}: {reason}" if field else reason)


class RequestTooLargeError(InvalidRequestError):
    """The request body is larger than the configured cap."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        super().__init__(f"request body exceeds {limit_bytes} bytes")


class ModelNotFoundError(InvalidRequestError):
    """The request names a model this service's generator does not serve."""

    def __init__(self, model: str, *, served: list[str]) -> None:
        self.model = model
        self.served = served
        super().__init__(f"the model {model!r} is not served here; use one of {served}", field="model")


class UnknownModelError(ModelNotFoundError):
    """A model looked up by its id (GET /v1/models/{id}) is not served here: not found, rather than
    a bad parameter of a generation request."""


class AuthenticationRequiredError(ImageGenerationException):
    """The request carries no valid API key."""

    def __init__(self, reason: str = "a valid bearer API key is required") -> None:
        super().__init__(reason)


class ImageNotFoundError(ImageGenerationException):
    """No image has this GUID."""

    def __init__(self, guid: object) -> None:
        self.guid = str(guid)
        super().__init__(f"no image with guid {self.guid}")


class ImageDeletedError(ImageNotFoundError):
    """The image a request (an idempotent replay) would answer with was deleted."""

    def __init__(self, guid: object) -> None:
        super().__init__(guid)
        self.message = f"the image {self.guid} made for this request was deleted"
        self.args = (self.message,)


class BlobNotFoundError(ImageGenerationException):
    """The blob store holds nothing under this key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no stored content under key {key!r}")


class InvalidBlobKeyError(InvalidRequestError):
    """A blob key that could escape its store (traversal, absolute path, NUL)."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"invalid blob key {key!r}")


class PromptRejectedError(ImageGenerationException):
    """The generator refused the prompt (content policy or moderation)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the image generator refused this prompt: {reason}")


class GeneratorUnavailableError(ImageGenerationException):
    """The generator could not answer now (timeout, 5xx, rate limit, overload); retrying may help."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(f"the image generator is unavailable: {reason}")


class GeneratorBusyError(GeneratorUnavailableError):
    """Too many generations are in flight in this worker; the request waited and gave up."""

    def __init__(self, limit: int, waited_s: float) -> None:
        self.limit = limit
        self.waited_s = waited_s
        super().__init__(
            f"{limit} generations already in flight; waited {waited_s:g}s for a slot",
            retry_after_s=1.0,
        )


class GeneratorRateLimitedError(GeneratorUnavailableError):
    """The upstream generator is rate limiting PixyProxy (HTTP 429); retry after `retry_after_s`."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(reason, retry_after_s=retry_after_s)


class GeneratorBadResponseError(ImageGenerationException):
    """The generator answered, but not with a usable image, or refused our credentials."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the image generator gave an unusable answer: {reason}")


class GeneratorAuthenticationError(GeneratorBadResponseError):
    """The upstream generator refused PixyProxy's credentials."""

    def __init__(self) -> None:
        super().__init__("the upstream refused PixyProxy's credentials")


class RepositoryUnavailableError(ImageGenerationException):
    """The image repository (database) cannot be reached or did not answer."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the image repository is unavailable: {reason}")


class RecordOutcomeUnknownError(RepositoryUnavailableError):
    """An insert failed in a way that leaves unknown whether the record was written (a lost commit)."""

    def __init__(self, guid: object, reason: str) -> None:
        self.guid = str(guid)
        super().__init__(f"could not tell whether image {self.guid} was recorded: {reason}")


class BlobStoreUnavailableError(ImageGenerationException):
    """The blob store cannot be reached or did not answer."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the blob store is unavailable: {reason}")


class ConflictError(ImageGenerationException):
    """The request conflicts with what is already stored."""


class DuplicateImageError(ConflictError):
    """An image with this GUID already exists."""

    def __init__(self, guid: object) -> None:
        self.guid = str(guid)
        super().__init__(f"an image with guid {self.guid} already exists")


class IdempotencyConflictError(ConflictError):
    """The idempotency key was already used with a different request body."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used with a different request")


class ConfigurationError(ImageGenerationException):
    """A setting is missing or has a value PixyProxy cannot use."""

    def __init__(self, setting: str, reason: str) -> None:
        self.setting = setting
        self.reason = reason
        super().__init__(f"configuration error: {setting}: {reason}")


class JobNotFoundError(ImageGenerationException):
    """No generation job has this id."""

    def __init__(self, job_id: object) -> None:
        self.job_id = str(job_id)
        super().__init__(f"no job with id {self.job_id}")


class JobQueueUnavailableError(ImageGenerationException):
    """The job queue (the message broker) cannot be reached."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"job queue unavailable: {reason}")


class JobFailedError(ImageGenerationException):
    """A job another process ran has failed; carries the name of the error it failed with."""

    def __init__(self, job_id: object, *, kind: str, detail: str, retry_after_s: float | None = None) -> None:
        self.job_id = str(job_id)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s
        super().__init__(detail)


class JobCanceledError(ImageGenerationException):
    """The job was canceled before it made its image."""

    def __init__(self, job_id: object) -> None:
        self.job_id = str(job_id)
        super().__init__(f"job {self.job_id} was canceled")


def exception_class_named(name: str) -> type[ImageGenerationException]:
    """The ImageGenerationException subclass with this name, or the base class if none has it."""
    pending: list[type[ImageGenerationException]] = [ImageGenerationException]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending.extend(cls.__subclasses__())
    return ImageGenerationException


class JobTimeoutError(GeneratorUnavailableError):
    """A job did not finish within the time its caller waits; it goes on, and can be polled."""

    def __init__(self, job_id: object) -> None:
        self.job_id = str(job_id)
        super().__init__(f"job {self.job_id} has not finished yet; follow it at /jobs/{self.job_id}")


class WebhookRefusedError(InvalidRequestError):
    """A webhook URL PixyProxy will not call: no signing secret is configured, or its host is (or
    resolves to) a loopback, private, link-local or multicast address."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        super().__init__(reason, field="webhook")


class QuotaUnavailableError(ImageGenerationException):
    """The quota's shared storage (Redis) cannot be reached and PIXYPROXY_RATE_LIMIT_ON_ERROR is
    `deny`: nothing can be counted, so nothing is allowed. Retry after `retry_after_s`."""

    def __init__(self, quota: str, *, retry_after_s: float = 5.0) -> None:
        self.quota = quota
        self.retry_after_s = retry_after_s
        super().__init__(f"the {quota} quota cannot be counted right now (its storage is unavailable)")


class QuotaExceededError(ImageGenerationException):
    """An owner asked for more than its quota has left (`cost` units: requests, or images); nothing
    was done. Retry after `retry_after_s`."""

    def __init__(self, owner: str, *, quota: str, cost: int, remaining: int, retry_after_s: float) -> None:
        self.owner = owner
        self.quota = quota
        self.cost = cost
        self.remaining = remaining
        self.retry_after_s = retry_after_s
        super().__init__(
            f"the {quota} quota of {owner!r} has {remaining} left and this asks for {cost};"
            f" retry in {retry_after_s:.0f}s"
        )
