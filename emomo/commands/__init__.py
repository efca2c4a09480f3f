"""Scrapy commands: search, stats."""
