"""The aiohttp server: the agencies' API, the operators' console routes, TLS identity, error mapping."""
