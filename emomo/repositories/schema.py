"""Versioned schema migrations: (version, statements), applied in order once each.

Table and column names follow the seed and the original system. The SQL is
common to SQLite and PostgreSQL; ``{serial}`` is each dialect's
auto-incrementing key, ``{blob}`` its column of bytes. Where the dialects differ (SQLite cannot drop a
constraint: it rebuilds the table), a statement is a dict by dialect.
"""

from __future__ import annotations

Statement = str | dict[str, list[str]]

_MEME_COLUMNS = ("id, source_type, source_id, md5_hash, storage_key, format, width, height, is_animated, "
                 "file_size, category, tags, source_url, vlm_description, vlm_model, status, created_at, updated_at")

MIGRATIONS: list[tuple[int, list[Statement]]] = [
    (1, [
        """
        CREATE TABLE IF NOT EXISTS memes (
            id TEXT PRIMARY KEY,
            source_type TEXT NOT NULL,
            source_id TEXT NOT NULL,
            md5_hash TEXT NOT NULL UNIQUE,
            storage_key TEXT NOT NULL,
            format TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            is_animated BOOLEAN NOT NULL DEFAULT FALSE,
            file_size INTEGER NOT NULL,
            category TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            source_url TEXT,
            vlm_description TEXT,
            vlm_model TEXT,
            status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'failed')),
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            UNIQUE (source_type, source_id)
        )
        """,
        "CREATE INDEX IF NOT EXISTS idx_memes_status ON memes (status)",
        "CREATE INDEX IF NOT EXISTS idx_memes_category ON memes (category)",
        """
        CREATE TABLE IF NOT EXISTS meme_vectors (
            id TEXT PRIMARY KEY,
            meme_id TEXT NOT NULL REFERENCES memes (id) ON DELETE CASCADE,
            md5_hash TEXT NOT NULL,
            collection TEXT NOT NULL,
            embedding_model TEXT NOT NULL,
            qdrant_point_id TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'active',
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            UNIQUE (md5_hash, collection)
        )
        """,
        "CREATE INDEX IF NOT EXISTS idx_meme_vectors_meme ON meme_vectors (meme_id)",
        """
        CREATE TABLE IF NOT EXISTS meme_descriptions (
            id {serial},
            md5_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            description TEXT NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            UNIQUE (md5_hash, model)
        )
        """,
    ]),
    (2, [
        # Where a paged source's last crawl got to (fabiaoqing: the last list page done).
        """
        CREATE TABLE IF NOT EXISTS crawl_cursors (
            source TEXT PRIMARY KEY,
            cursor TEXT NOT NULL,
            updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
        )
        """,
    ]),
    (3, [
        # A meme may come from several sources (the same image under two names), and a source
        # may change its content: the source -> meme link moves out of the memes row.
        {"sqlite": [
            # SQLite cannot drop the UNIQUE (source_type, source_id) or widen the CHECK: rebuild
            # (foreign keys are off while migrations run, so meme_vectors keeps its rows).
            """
            CREATE TABLE memes_v3 (
                id TEXT PRIMARY KEY,
                source_type TEXT NOT NULL,
                source_id TEXT NOT NULL,
                md5_hash TEXT NOT NULL UNIQUE,
                storage_key TEXT NOT NULL,
                format TEXT NOT NULL,
                width INTEGER NOT NULL,
                height INTEGER NOT NULL,
                is_animated BOOLEAN NOT NULL DEFAULT FALSE,
                file_size INTEGER NOT NULL,
                category TEXT,
                tags TEXT NOT NULL DEFAULT '[]',
                source_url TEXT,
                vlm_description TEXT,
                vlm_model TEXT,
                status TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'active', 'failed', 'retired')),
                created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
            )
            """,
            f"INSERT INTO memes_v3 ({_MEME_COLUMNS}) SELECT {_MEME_COLUMNS} FROM memes",
            "DROP TABLE memes",
            "ALTER TABLE memes_v3 RENAME TO memes",
            "CREATE INDEX IF NOT EXISTS idx_memes_status ON memes (status)",
            "CREATE INDEX IF NOT EXISTS idx_memes_category ON memes (category)",
        ], "postgres": [
            "ALTER TABLE memes DROP CONSTRAINT IF EXISTS memes_source_type_source_id_key",
            "ALTER TABLE memes DROP CONSTRAINT IF EXISTS memes_status_check",
            "ALTER TABLE memes ADD CONSTRAINT memes_status_check "
            "CHECK (status IN ('pending', 'active', 'failed', 'retired'))",
        ]},
        """
        CREATE TABLE IF NOT EXISTS meme_sources (
            source_type TEXT NOT NULL,
            source_id TEXT NOT NULL,
            meme_id TEXT NOT NULL REFERENCES memes (id) ON DELETE CASCADE,
            md5_hash TEXT NOT NULL,
            locator TEXT,
            created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (source_type, source_id)
        )
        """,
        "CREATE INDEX IF NOT EXISTS idx_meme_sources_meme ON meme_sources (meme_id)",
        "INSERT INTO meme_sources (source_type, source_id, meme_id, md5_hash, locator) "
        "SELECT source_type, source_id, id, md5_hash, source_url FROM memes",
    ]),
    (4, [
        # Which worker is ingesting an image for a collection, so that workers sharing one
        # database never describe or upload it twice; a claim older than ingest.claim_timeout
        # (a worker killed mid-item) is taken over. claimed_at: seconds since the epoch.
        """
        CREATE TABLE IF NOT EXISTS meme_claims (
            md5_hash TEXT NOT NULL,
            collection TEXT NOT NULL,
            worker TEXT NOT NULL,
            claimed_at DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (md5_hash, collection)
        )
        """,
    ]),
    (5, [
        # A meme's perceptual hash (emomo.near) and the text read on its image (NULL until OCR
        # has read it: on the VLM path, when a near-duplicate first needs it).
        """
        CREATE TABLE IF NOT EXISTS meme_phashes (
            meme_id TEXT PRIMARY KEY REFERENCES memes (id) ON DELETE CASCADE,
            phash BIGINT NOT NULL,
            image_text TEXT
        )
        """,
        # The hash's four 16-bit bands, each a key (band number and value): a lookup seeks the
        # keys near its own instead of comparing every hash.
        """
        CREATE TABLE IF NOT EXISTS meme_phash_bands (
            band_key INTEGER NOT NULL,
            meme_id TEXT NOT NULL REFERENCES memes (id) ON DELETE CASCADE,
            PRIMARY KEY (band_key, meme_id)
        )
        """,
        "CREATE INDEX IF NOT EXISTS idx_meme_phash_bands_meme ON meme_phash_bands (meme_id)",
    ]),
    (6, [
        # Memes are templates: a series' members are all "near" by the hash. Each meme keeps a
        # thumbnail (emomo.near, compressed) that tells a copy from another caption, and the
        # blocks that rank candidates (in its series' frame: a crop is "shifted" out of it); seq
        # orders the signatures so the in-memory index that replaces the band keys reads on
        # from where it was.
        "ALTER TABLE meme_phashes ADD COLUMN thumb {blob}",
        "ALTER TABLE meme_phashes ADD COLUMN blocks {blob}",
        "ALTER TABLE meme_phashes ADD COLUMN shifted BOOLEAN NOT NULL DEFAULT FALSE",
        {"sqlite": ["ALTER TABLE meme_phashes ADD COLUMN seq INTEGER",
                    "UPDATE meme_phashes SET seq = rowid"],
         "postgres": ["ALTER TABLE meme_phashes ADD COLUMN seq BIGSERIAL"]},
        "CREATE INDEX IF NOT EXISTS idx_meme_phashes_seq ON meme_phashes (seq)",
        "DROP TABLE IF EXISTS meme_phash_bands",
    ]),
    (7, [
        # A meme that failed to be described or embedded: how many times, and the last reason;
        # after ingest.max_attempts it is failed, not retried by every `scrapy crawl pending`.
        "ALTER TABLE memes ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE memes ADD COLUMN last_error TEXT",
    ]),
]
