"""Parsing PIXYPROXY_MYSQL_URL: decoding, defaults, refusals, and the password kept out of sight."""

from __future__ import annotations

import pytest

from pixyproxy.adapters.mysql import MySqlImageRepository, parse_mysql_url
from pixyproxy.adapters.mysql.connection import quote_identifier
from pixyproxy.domain.exceptions import ConfigurationError


def test_url_parts_are_decoded() -> None:
    target = parse_mysql_url("mysql://pixy%40app:p%40ss%3Aw%2Frd%25@db.example:3307/images_1")
    assert (target.user, target.password) == ("pixy@app", "p@ss:w/rd%")
    assert (target.host, target.port, target.database) == ("db.example", 3307, "images_1")


def test_port_and_password_default() -> None:
    target = parse_mysql_url("mysql+aiomysql://root@127.0.0.1/pixyproxy")
    assert (target.port, target.password) == (3306, "")


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:secret-pw@h/db",
        "mysql://u:secret-pw@h:99999/db",
        "mysql://u:secret-pw@h:3306/",
        "mysql://u:secret-pw@h:3306/db`; DROP DATABASE x",
        "mysql://u:secret-pw@h:3306/my-db",
        "mysql://:secret-pw@h:3306/db",
        "mysql://u:secret-pw@:3306/db",
    ],
)
def test_bad_urls_name_the_setting_not_the_secret(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_mysql_url(url)
    assert caught.value.setting == "PIXYPROXY_MYSQL_URL"
    assert "secret-pw" not in str(caught.value)


def test_password_is_not_in_reprs() -> None:
    url = "mysql://u:secret-pw@h:3306/db"
    assert "secret-pw" not in repr(parse_mysql_url(url))
    assert "secret-pw" not in repr(MySqlImageRepository(url))


def test_identifiers_are_backquoted_only_when_safe() -> None:
    assert quote_identifier("pixyproxy_test_01") == "`pixyproxy_test_01`"
    with pytest.raises(ConfigurationError):
        quote_identifier("x` ; DROP DATABASE y; `")
    with pytest.raises(ConfigurationError):
        quote_identifier("a" * 65)
