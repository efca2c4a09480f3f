"""The docs say what the code does: the configuration page is the models', and every key and
environment variable the docs name exists (and every variable the code reads is named)."""

from __future__ import annotations

import re
from pathlib import Path

from emomo import configdoc
from emomo.config import EmomoConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
SECTIONS = {"database", "qdrant", "storage", "vlm", "embeddings", "ingest", "dedupe", "sources", "server"}
#: the shape of an environment variable of a backend (Scrapy's settings are spelt alike: not these)
VARIABLE = re.compile(r"\b(?:DATABASE|QDRANT|STORAGE|OPENAI|JINA|MODELSCOPE|VLM|R2|S3|AWS)_[A-Z0-9_*]*[A-Z0-9*]")
KEY = re.compile(r"`((?:" + "|".join(SECTIONS) + r")(?:\[[\w-]*\])?(?:\.\w+)+)")


def config_keys() -> set[str]:
    keys = set()
    for section, model in configdoc.SECTIONS:
        for name in model.model_fields:
            keys.add(f"{section.replace('[]', '')}.{name}")
    keys |= {f"{name}" for name in EmomoConfig.model_fields}
    keys |= {"sources.chinesebqb", "sources.staging"}
    return keys


def test_the_configuration_page_is_made_from_the_models() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8") == configdoc.render(), (
        "docs/configuration.md is out of date: python -m emomo.configdoc > docs/configuration.md")


def test_every_key_the_docs_name_exists() -> None:
    known = config_keys()
    wrong = []
    for doc in DOCS:
        for found in KEY.findall(doc.read_text(encoding="utf-8")):
            key = re.sub(r"\[[\w-]*\]", "", found)
            if key not in known:
                wrong.append(f"{doc.name}: {found}")
    assert not wrong, wrong


def test_every_variable_the_docs_name_is_read_and_every_one_read_is_named() -> None:
    read = {var for var, _ in configdoc.environment()}
    named: dict[str, str] = {}
    for doc in DOCS:
        for var in VARIABLE.findall(doc.read_text(encoding="utf-8")):
            named.setdefault(var, doc.name)
    assert {var: doc for var, doc in named.items() if var not in read} == {}
    assert read - set(named) - {"EMOMO_CONFIG"} == set()
