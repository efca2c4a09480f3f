"""What each source looks like on disk: walking and naming, no Scrapy and no I/O beyond reading."""
