"""Certificate life cycle and trust decisions: the inventory, expiry watch, and who a certificate
belongs to.
"""
