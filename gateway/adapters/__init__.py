"""Edges of the gateway: storage, network adapters, key files, transports."""
