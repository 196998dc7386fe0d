"""The use cases: intake, courier, mailbox, inbound federation, deadlines, rate limits, and the ports
they are given. Never imports aiohttp, SQLAlchemy or key files.
"""
