"""What the workers of a shared crawl (issue 14) share in the tests: one PostgreSQL database and
one VLM that counts each image it describes; each worker keeps an embedded index of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from conftest import kill
from servers import FakeAPI, Faults, fake_api, postgres_database


def worker_config(folder: Path, name: str, claim_timeout: float = 600) -> str:
    """A worker's config: the shared PostgreSQL and VLM, an embedded index of its own."""
    (folder / f"{name}.yaml").write_text(
        "database:\n  driver: postgres\nvlm:\n  provider: openai\n"
        f"qdrant:\n  path: data/qdrant-{name}\ningest:\n  claim_timeout: {claim_timeout}\n", encoding="utf-8")
    return f"{name}.yaml"


@contextmanager
def shared_backends(delay: float) -> Iterator[tuple[FakeAPI, str, dict[str, str]]]:
    """What workers share: a VLM that counts each image it describes, and one PostgreSQL database."""
    api = FakeAPI(api_key="sk-workers", vlm_faults=Faults(delay=delay))
    with fake_api(api) as url, postgres_database() as dsn:
        yield api, dsn, {"DATABASE_URL": dsn, "OPENAI_API_KEY": "sk-workers", "OPENAI_BASE_URL": url,
                         "VLM_MODEL": "test/vlm"}


def active_memes(dsn: str) -> int:
    """Active memes in the shared database, while workers run (0 before it has tables)."""
    with psycopg.connect(dsn) as conn:
        try:
            return int(conn.execute("SELECT COUNT(*) FROM memes WHERE status = 'active'").fetchone()[0])
        except psycopg.errors.UndefinedTable:
            return 0


def wait_all(procs: Iterable[subprocess.Popen[str]], timeout: float = 300) -> list[int]:
    """Each worker's exit code; a worker still running after ``timeout`` is killed."""
    procs = list(procs)
    try:
        return [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                kill(p)
