"""The local PostgreSQL (127.0.0.1:5432, user postgres): is it there, and scratch copies of a
migrated template database (`CREATE DATABASE ... TEMPLATE`), each one fresh and empty."""

from __future__ import annotations

import os

import psycopg2

from stack.instance import ensure_postgres_database

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


def postgres_available() -> bool:
    try:
        ensure_postgres_database(f"{PG}/postgres")
        return True
    except Exception:
        return False


_counter = iter(range(1_000_000))


def postgres_copy(template_url: str) -> str:
    """A new database copied from the one at `template_url`; returns its URL. Drop it after."""
    name = f"onboarding_archive_{os.getpid()}_{next(_counter)}"
    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_url.rsplit("/", 1)[1]}"')
    finally:
        conn.close()
    return f"{PG}/{name}"
