"""The ordered ingest stages, one thin module each (order in emomo.settings.ITEM_PIPELINES)."""
