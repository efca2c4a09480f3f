"""Deploy to a real scrapyd on loopback with scrapyd-deploy, schedule jobs with arguments."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, assert_consistent, read_state
from memegen import CAPTIONS, CATEGORIES, build_tree, meme_bytes
from servers import bin_path, free_port

COLLECTION = "emomo-e5-small"

pytestmark = pytest.mark.slow  # a real scrapyd and its jobs


@dataclass
class Scrapyd:
    url: str
    home: Path

    def call(self, endpoint: str, **params: str) -> Any:
        data = urllib.parse.urlencode(list(params.items())).encode() if params else None
        with urllib.request.urlopen(f"{self.url}/{endpoint}", data=data, timeout=30) as r:  # loopback
            return json.loads(r.read())

    def schedule(self, spider: str, *settings: str, **args: str) -> str:
        params = [("project", "emomo"), ("spider", spider), *args.items(), *(("setting", s) for s in settings)]
        data = urllib.parse.urlencode(params).encode()
        with urllib.request.urlopen(f"{self.url}/schedule.json", data=data, timeout=30) as r:
            answer = json.loads(r.read())
        assert answer["status"] == "ok", answer
        return str(answer["jobid"])

    def wait(self, *jobs: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = self.call("listjobs.json?project=emomo")
            finished = {j["id"] for j in listing["finished"]}
            if set(jobs) <= finished:
                return
            time.sleep(0.5)
        raise AssertionError(f"jobs {jobs} did not finish: {listing}")

    def log(self, spider: str, job: str) -> str:
        return (self.home / "logs" / "emomo" / spider / f"{job}.log").read_text(encoding="utf-8")


def deploy(home: Path, url: str) -> str:
    """scrapyd-deploy from a copy of the project, as a user runs it from a clone."""
    project = home / "project"
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(
        ".venv", ".git", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache", "samples", "tests"))
    # A target of our own in the user-level scrapy.cfg; the project's cfg names port 6800.
    xdg = home / "xdg"
    xdg.mkdir()
    (xdg / "scrapy.cfg").write_text(f"[deploy:ci]\nurl = {url}/\nproject = emomo\n", encoding="utf-8")
    env = {**os.environ, "XDG_CONFIG_HOME": str(xdg)}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    done = subprocess.run([bin_path("scrapyd-deploy"), "ci"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stderr + done.stdout


@pytest.fixture(scope="module")
def scrapyd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapyd]:
    home = tmp_path_factory.mktemp("scrapyd")
    port = free_port()
    (home / "scrapyd.conf").write_text(
        "[scrapyd]\n"
        "bind_address = 127.0.0.1\n"
        f"http_port = {port}\n"
        "eggs_dir = eggs\nlogs_dir = logs\nitems_dir =\ndbs_dir = dbs\n"
        "max_proc = 4\npoll_interval = 0.2\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOMO_", "SCRAPY_"))}
    with open(home / "scrapyd.out", "wb") as out:
        proc = subprocess.Popen([bin_path("scrapyd")], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        from servers import wait_for_port

        wait_for_port(port, proc)
        server = Scrapyd(f"http://127.0.0.1:{port}", home)
        output = deploy(home, server.url)
        assert '"status": "ok"' in output, output
        assert "emomo" in server.call("listprojects.json")["projects"]
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def write_config(folder: Path, extra: str = "") -> Path:
    """Absolute paths: a scrapyd job runs in scrapyd's folder, not ours."""
    data = folder / "data"
    config = folder / "config.yaml"
    config.write_text(
        f"database:\n  path: {data / 'emomo.db'}\nqdrant:\n  path: {data / 'qdrant'}\n"
        f"storage:\n  path: {data / 'objects'}\n{extra}", encoding="utf-8")
    return config


def test_deployed_egg_runs_chinesebqb_then_staging_with_arguments(scrapyd: Scrapyd, tmp_path: Path,
                                                                 cjk_font: str) -> None:
    tree = tmp_path / "ChineseBQB"
    planted = build_tree(tree, CAPTIONS[120:132], CATEGORIES, seed=9)
    config = write_config(tmp_path)
    job = scrapyd.schedule("chinesebqb", f"EMOMO_CONFIG={config}", repo_path=str(tree), embedding="local",
                           limit="10")
    scrapyd.wait(job)
    log = scrapyd.log("chinesebqb", job)
    assert log.rstrip().splitlines()[-1].split("] INFO: ", 1)[1].startswith(
        "Ingest summary: 10 processed, 0 pending, 0 skipped as duplicate, 0 invalid, 0 failed")
    assert len(read_state(tmp_path).memes) == 10

    staging = tmp_path / "staging" / "shop"
    (staging / "images").mkdir(parents=True)
    lines = []
    for i, caption in enumerate(("我先溜了", "你是懂表情包的")):
        (staging / "images" / f"{i}.png").write_bytes(meme_bytes(caption, 40 + i, "png"))
        lines.append(json.dumps({"id": str(i), "filename": f"{i}.png", "category": "表情", "tags": [caption],
                                 "source_url": None, "is_animated": False, "format": "png"}, ensure_ascii=False))
    (staging / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    job = scrapyd.schedule("staging", f"EMOMO_CONFIG={config}", source="shop",
                           staging_path=str(tmp_path / "staging"))
    scrapyd.wait(job)
    assert "Ingest summary: 2 processed" in scrapyd.log("staging", job)
    state = read_state(tmp_path)
    assert len(state.memes) == 12
    assert {m["source_type"] for m in state.memes} == {"chinesebqb", "staging:shop"}
    assert_consistent(state, COLLECTION)
    assert {p.md5 for p in planted[:10]} <= state.active_md5s()


def test_two_jobs_at_once_on_the_embedded_index_one_refuses_clearly_and_data_stays_intact(
        scrapyd: Scrapyd, tmp_path: Path, cjk_font: str) -> None:
    tree = tmp_path / "ChineseBQB"
    planted = build_tree(tree, CAPTIONS[132:150], CATEGORIES, seed=13)
    config = write_config(tmp_path)
    jobs = [scrapyd.schedule("chinesebqb", f"EMOMO_CONFIG={config}", repo_path=str(tree)) for _ in range(2)]
    scrapyd.wait(*jobs)
    logs = [scrapyd.log("chinesebqb", job) for job in jobs]
    refused = [log for log in logs if "is in use by pid" in log]
    ran = [log for log in logs if f"Ingest summary: {len(planted)} processed" in log]
    assert len(refused) == 1 and len(ran) == 1, [log[-1500:] for log in logs]
    assert "the embedded index is single-process" in refused[0]
    state = read_state(tmp_path)
    assert state.active_md5s() == {p.md5 for p in planted}
    assert_consistent(state, COLLECTION)


def test_cancel_json_ends_a_running_job_cleanly_with_its_summary(scrapyd: Scrapyd, tmp_path: Path,
                                                                  cjk_font: str) -> None:
    from conftest import assert_no_orphans, count_memes, wait_for

    tree = tmp_path / "ChineseBQB"
    planted = build_tree(tree, CAPTIONS[:60], CATEGORIES, seed=17)
    # One OCR engine: at the cancel some admitted items still wait for it (and are interrupted).
    config = write_config(tmp_path, "ingest:\n  ocr_threads: 1\n")
    job = scrapyd.schedule("chinesebqb", f"EMOMO_CONFIG={config}", repo_path=str(tree))
    assert wait_for(lambda: count_memes(tmp_path) >= 3, timeout=180)
    answer = scrapyd.call("cancel.json", project="emomo", job=job)  # SIGTERM, as an operator's cancel
    assert answer["status"] == "ok", answer
    cancelled = time.monotonic()
    scrapyd.wait(job, timeout=60)
    assert time.monotonic() - cancelled < 20
    log = scrapyd.log("chinesebqb", job)
    last = log.rstrip().splitlines()[-1]
    assert "Ingest summary:" in last and "; shutdown)" in last, log[-2000:]
    # Every item handed to Scrapy ends with an outcome (finished, or interrupted before its
    # paid call), whether or not the cancel lands while some still wait.
    summed = int(re.search(r"\((\d+) items; shutdown\)", last).group(1))
    yielded = int(re.search(r"'emomo/chinesebqb/yielded': (\d+)", log).group(1))
    assert summed == yielded, last
    state = read_state(tmp_path)
    assert 3 <= len(state.active_md5s()) < len(planted)
    assert_no_orphans(state, COLLECTION)
