"""The aiohttp side: admin API, unsubscribe pages, status page, metrics."""
