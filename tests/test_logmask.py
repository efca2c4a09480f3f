"""Secrets never in a log line or an answer, whatever form the DSN takes (issue 22)."""

from __future__ import annotations

import pytest

from emomo.logmask import SecretMask, dsn_passwords, escaped


@pytest.mark.parametrize(("dsn", "password"), [
    ("host=127.0.0.1 port=5999 password = S3cret dbname=x", "S3cret"),
    ("host=h password='a b' dbname=x", "a b"),
    (r"host=h password='it\'s' dbname=x", "it's"),
    ("password=pw", "pw"),
    ("postgresql://user:p%40ss@127.0.0.1:5432/db", "p@ss"),
    ("postgresql://user:plain@127.0.0.1/db?sslmode=disable", "plain"),
    ("postgresql://127.0.0.1/db?password=inquery", "inquery"),
    ("host=h dbname=x", ""),
])
def test_the_password_of_every_dsn_form_is_found(dsn: str, password: str) -> None:
    assert password in dsn_passwords(dsn) if password else dsn_passwords(dsn) == []


@pytest.mark.parametrize("dsn", [
    "host=127.0.0.1 port=5999 password = S3cret dbname=x",
    "host=127.0.0.1 password='a b' dbname=x",
    "postgresql://user:p%40ss@127.0.0.1:5432/db",
    "host=127.0.0.1 password=pw dbname=x",
])
def test_a_dsn_printed_whole_shows_no_part_of_its_password(dsn: str) -> None:
    mask = SecretMask(dsn_passwords(dsn))
    shown = mask.mask(f"connection failed: {dsn}: could not connect")
    for password in dsn_passwords(dsn):
        assert password not in shown.replace("***", ""), shown
    assert "***" in shown and "127.0.0.1" in shown


def test_a_short_secret_is_masked_as_a_word_without_garbling_the_rest() -> None:
    mask = SecretMask(["pw", "k1"])
    assert mask.mask("password=pw; key k1 in pwned k1x") == "password=***; key *** in pwned k1x"


@pytest.mark.parametrize(("name", "shown"), [
    ("m1.png\n2026-11-29 12:00:00 [emomo] INFO: Ingest summary: all good", r"m1.png\n2026-11-29"),
    ("a\rb", r"a\rb"),
    ("esc\x1b[31mred", r"esc\x1b[31mred"),
    ("表情包 ok.gif", "表情包 ok.gif"),
])
def test_control_characters_in_a_logged_name_are_escaped(name: str, shown: str) -> None:
    assert shown in escaped(name) and "\n" not in escaped(name) and "\x1b" not in escaped(name)


@pytest.mark.parametrize(("dsn", "shown"), [
    ("host=127.0.0.1 port=5999 password = S3cret dbname=x", "host=127.0.0.1 port=5999 password = *** dbname=x"),
    ("host=h password='a b' dbname=x", "host=h password=*** dbname=x"),
    ("postgresql://user:p%40ss@127.0.0.1:5432/db", "postgresql://user:***@127.0.0.1:5432/db"),
])
def test_the_postgres_refusal_names_the_server_without_the_password(dsn: str, shown: str) -> None:
    from emomo.repositories.postgres import redact

    assert redact(dsn) == shown
