"""The MySQL/MariaDB repository adapters (images, jobs, webhook deliveries) and their schema set-up."""

from pixyproxy.adapters.mysql.connection import MySqlTarget, parse_mysql_url
from pixyproxy.adapters.mysql.init import SCHEMA_VERSION, init_schema
from pixyproxy.adapters.mysql.jobs import MySqlJobRepository
from pixyproxy.adapters.mysql.repository import MySqlImageRepository
from pixyproxy.adapters.mysql.webhooks import MySqlWebhookDeliveries

__all__ = [
    "SCHEMA_VERSION",
    "MySqlImageRepository",
    "MySqlJobRepository",
    "MySqlTarget",
    "MySqlWebhookDeliveries",
    "init_schema",
    "parse_mysql_url",
]
