"""The meme item every spider yields and every pipeline stage fills in.

Pipelines read and write it through ItemAdapter, so a dict with the same keys
works as well. The fields above the line come from the source; the fields
below it are filled in by the stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MemeItem:
    source_type: str
    source_id: str
    #: where the image came from: its URL (optional)
    url: str | None = None
    #: the page that shows the meme (a detail page), when the source has one
    page_url: str | None = None
    #: a local file to read; or else ``body`` holds the bytes
    path: str | None = None
    #: (device, inode) of the file a source listed at ``path``: the read refuses any other
    #: (a link swapped in since); None reads whatever ``path`` names
    file_identity: tuple[int, int] | None = None
    body: bytes | None = field(default=None, repr=False)
    category: str = ""
    tags: list[str] = field(default_factory=list)
    #: hints from the source; the read stage replaces them with what the bytes say
    is_animated: bool | None = None
    format: str | None = None
    # --- filled in by the pipelines -------------------------------------
    md5: str | None = None
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    meme_id: str | None = None
    storage_key: str | None = None
    storage_url: str | None = None
    description: str | None = None
    description_model: str | None = None
    #: True when the meme (row, object, description) already existed
    reused: bool = False
    collection: str | None = None
    point_id: str | None = None
    vector: list[float] | None = field(default=None, repr=False)
    status: str | None = None
