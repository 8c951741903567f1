"""How the MySQL adapter reaches its server: the parsed URL, session settings and error translation."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql

from pixyproxy.domain.exceptions import ConfigurationError, RepositoryUnavailableError

URL_SETTING = "PIXYPROXY_MYSQL_URL"
_SCHEMES = {"mysql", "mysql+aiomysql"}
_IDENTIFIER = re.compile(r"[A-Za-z0-9_]{1,64}")

# Every session speaks UTC and utf8mb4, and refuses to truncate silently. Lock waits are short:
# our statements are single-row and autocommitted, so a long wait means trouble, not contention.
SESSION_INIT = (
    "SET time_zone = '+00:00', sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION',"
    " innodb_lock_wait_timeout = 10"
)

# Driver error numbers that mean "this connection is gone": the pool must drop it, and a read may
# be retried once on a fresh one. 1927 and 4031 are MariaDB's and MySQL's "killed" / "idle timeout".
CONNECTION_LOST = frozenset({2006, 2013, 2055, 1927, 4031, 1053})


@dataclass(frozen=True)
class MySqlTarget:
    """Where the database lives; the password never appears in the repr."""

    host: str
    port: int
    user: str
    database: str
    password: str = field(default="", repr=False)

    def connect_kwargs(self, *, connect_timeout_s: float, with_database: bool = True) -> dict[str, Any]:
        """Keyword arguments for aiomysql.connect / create_pool."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database if with_database else None,
            "charset": "utf8mb4",
            "autocommit": True,
            "connect_timeout": connect_timeout_s,
            "init_command": SESSION_INIT,
        }

    def describe(self) -> str:
        """host:port/database, safe to log."""
        return f"{self.host}:{self.port}/{self.database}"


def quote_identifier(name: str) -> str:
    """A database name in backticks, after checking it can hold nothing but [A-Za-z0-9_]."""
    if not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(URL_SETTING, "the database name must be 1-64 characters of A-Z a-z 0-9 _")
    return "`" + name + "`"


def parse_mysql_url(url: str) -> MySqlTarget:
    """Parse mysql://user:password@host:port/database; errors name the setting, never the URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in _SCHEMES:
        raise ConfigurationError(URL_SETTING, "must look like mysql://user:password@host:3306/database")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ConfigurationError(URL_SETTING, "the port must be a number from 1 to 65535") from None
    if not parts.hostname:
        raise ConfigurationError(URL_SETTING, "a host is required")
    if not parts.username:
        raise ConfigurationError(URL_SETTING, "a user is required")
    database = parts.path.lstrip("/")
    quote_identifier(database)
    return MySqlTarget(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username),
        password=unquote(parts.password or ""),
        database=database,
    )


def error_number(err: BaseException) -> int | None:
    """The MySQL error number a driver exception carries, if any."""
    if isinstance(err, pymysql.err.MySQLError) and err.args and isinstance(err.args[0], int):
        return err.args[0]
    return None


def is_connection_lost(err: BaseException) -> bool:
    """Whether the error means the connection itself is dead (so a fresh one may succeed)."""
    return isinstance(err, pymysql.err.InterfaceError) or error_number(err) in CONNECTION_LOST


def unavailable(err: BaseException, target: MySqlTarget) -> RepositoryUnavailableError:
    """The domain error for a driver or network failure. Driver messages never carry the password."""
    number = error_number(err)
    if number == 1146:  # table missing
        reason = f"the schema is missing in {target.describe()}; run `pixyproxy init-db`"
    elif isinstance(err, TimeoutError):
        reason = f"MySQL at {target.describe()} did not answer in time"
    elif number is not None:
        message = err.args[1] if len(err.args) > 1 else ""
        reason = f"MySQL at {target.describe()} failed ({number}): {message}"
    else:
        reason = f"MySQL at {target.describe()} failed: {type(err).__name__}"
    return RepositoryUnavailableError(reason)
