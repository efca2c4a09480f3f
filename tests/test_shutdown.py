"""Ctrl-C and SIGTERM (what scrapyd's cancel sends) during a crawl (issue 10): one signal stops the
reading, lets the items in flight finish or drops those not yet described, writes the summary and
exits within seconds; a second exits at once. Either way the next run completes the source."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_consistent, assert_no_orphans, count_memes, read_state, start_crawl, wait_for
from crawling import run_crawl
from memegen import CAPTIONS, CATEGORIES, build_tree
from servers import FakeAPI, Faults, fake_api

COLLECTION = "emomo-e5-small"
KEY = "sk-test-SHUTDOWN-77"

pytestmark = pytest.mark.slow  # signals: only a real process shows them


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, cjk_font: str) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("shutdown") / "ChineseBQB"
    return root, build_tree(root, CAPTIONS[:24], CATEGORIES, seed=21)


@pytest.fixture
def slow_vlm() -> Iterator[tuple[FakeAPI, str]]:
    api = FakeAPI(api_key=KEY, vlm_faults=Faults(delay=1.0))
    with fake_api(api) as url:
        yield api, url


def setup(workdir: Path, mode: str, url: str) -> tuple[dict[str, str], dict[str, str]]:
    if mode == "ocr":
        # One OCR engine and a few items admitted: memes turn active a few at a time (not one
        # embedding batch of all of them), and at the signal some items still wait for the engine.
        (workdir / "ocr.yaml").write_text("ingest:\n  ocr_threads: 1\n", encoding="utf-8")
        return {"EMOMO_CONFIG": "ocr.yaml", "EMOMO_MAX_ITEMS_IN_FLIGHT": "8"}, {}
    (workdir / "vlm.yaml").write_text("vlm:\n  provider: openai\n  max_in_flight: 3\n", encoding="utf-8")
    return {"EMOMO_CONFIG": "vlm.yaml"}, {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": url, "VLM_MODEL": "test/vlm"}


@pytest.mark.parametrize(("mode", "signum"), [("ocr", signal.SIGINT), ("vlm", signal.SIGTERM)])
def test_one_signal_ends_the_crawl_within_seconds_and_a_rerun_completes(
        tmp_path: Path, tree: tuple[Path, list], slow_vlm: tuple[FakeAPI, str], mode: str, signum: int) -> None:
    root, planted = tree
    api, url = slow_vlm
    settings, env = setup(tmp_path, mode, url)
    args = [a for key, value in settings.items() for a in ("-s", f"{key}={value}")]
    log = tmp_path / "crawl.log"
    proc = start_crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}", *args, env=env, log=log)
    try:
        assert wait_for(lambda: count_memes(tmp_path) >= 4, timeout=180), log.read_text()[-3000:]
        os.kill(proc.pid, signum)
        sent = time.monotonic()
        code = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text(encoding="utf-8")
    assert took < 15, (took, text[-3000:])
    assert code == 3, text[-3000:]
    summary = [line for line in text.splitlines() if "Ingest summary:" in line]
    assert len(summary) == 1 and "; shutdown)" in summary[0], text[-2000:]
    assert " interrupted" in summary[0]
    state = read_state(tmp_path)
    assert 4 <= len(state.active_md5s()) < len(planted)
    assert_no_orphans(state, COLLECTION)
    calls = api.calls["chat"]
    if mode == "vlm":
        # What was sent was answered and kept; nothing new was sent after the signal.
        assert calls <= len(state.memes) + 3

    api.vlm_faults = Faults()  # the re-run needs no slow calls to show what it completes
    again = run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=settings, env=env)
    final = read_state(tmp_path)
    assert final.active_md5s() == {p.md5 for p in planted}
    assert_consistent(final, COLLECTION)
    assert "emomo/ingest/interrupted" not in again.stats
    if mode == "vlm":
        assert api.calls["chat"] == len(planted)  # no image described twice


def test_a_second_signal_exits_at_once_and_a_rerun_completes(
        tmp_path: Path, tree: tuple[Path, list], slow_vlm: tuple[FakeAPI, str]) -> None:
    root, planted = tree
    # VLM calls of a second: the first signal's graceful stop is still waiting for them at the second.
    settings, env = setup(tmp_path, "vlm", slow_vlm[1])
    args = [a for key, value in settings.items() for a in ("-s", f"{key}={value}")]
    log = tmp_path / "crawl.log"
    proc = start_crawl(tmp_path, "chinesebqb", "-a", f"repo_path={root}", *args, env=env, log=log)
    try:
        assert wait_for(lambda: count_memes(tmp_path) >= 2, timeout=180), log.read_text()[-3000:]
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert took < 5, took
    assert code == 3
    assert "forcing unclean shutdown" in log.read_text(encoding="utf-8")
    slow_vlm[0].vlm_faults = Faults()  # the re-run needs no slow calls to show what it completes
    run_crawl(tmp_path, "chinesebqb", repo_path=str(root), settings=settings, env=env)
    final = read_state(tmp_path)
    assert final.active_md5s() == {p.md5 for p in planted}
    assert_consistent(final, COLLECTION)
