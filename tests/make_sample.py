"""Writes samples/ChineseBQB: the small ChineseBQB-shaped tree the README's first command ingests.

Run from the repository root: ``python tests/make_sample.py``. The output is
committed, so users need no CJK font; rerunning gives the same files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memegen import CAPTIONS, CATEGORIES, build_tree, meme_bytes

SAMPLE_CAPTIONS = CAPTIONS[:30]


def main() -> None:
    root = Path("samples/ChineseBQB")
    shutil.rmtree(root, ignore_errors=True)
    build_tree(root, SAMPLE_CAPTIONS, CATEGORIES[:6], seed=3)
    # What a real clone also holds, which the spider skips without a word.
    for category in CATEGORIES[:6]:
        (root / category / "index.md").write_text(f"# {category}\n", encoding="utf-8")
    (root / "README").mkdir()
    (root / "README" / "preview.png").write_bytes(meme_bytes("这是说明图", 1, "png"))
    (root / "README.md").write_text("# ChineseBQB sample\n\nMade by tests/make_sample.py.\n", encoding="utf-8")
    print(f"wrote {len(SAMPLE_CAPTIONS)} memes under {root}")


if __name__ == "__main__":
    main()
