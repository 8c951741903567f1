"""The ports: what the use-cases need from the outside world, as protocols. Imports domain only."""

from pixyproxy.ports.blob_store import BlobStore
from pixyproxy.ports.generator import ImageGenerator
from pixyproxy.ports.jobs import JobEvents, JobHandler, JobQueue, JobRepository
from pixyproxy.ports.repository import ImageRepository
from pixyproxy.ports.webhooks import SendResult, WebhookDeliveries, WebhookSender

__all__ = [
    "BlobStore",
    "ImageGenerator",
    "ImageRepository",
    "JobEvents",
    "JobHandler",
    "JobQueue",
    "JobRepository",
    "SendResult",
    "WebhookDeliveries",
    "WebhookSender",
]
