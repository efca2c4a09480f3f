"""Scrapy commands: crawl (checked), search, stats, verify."""
