"""The search page and JSON API of ``scrapy serve`` (emomo.web.app)."""
