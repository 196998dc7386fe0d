"""File layouts in a gateway home: the dev PKI directory (``pki_dir``, made by ``pki_init``, read
back by ``pki_scan``), the dev CA that issues into it (``dev_ca``, ``owners``), the seal keys and
trust read from it (``keys``), the registry CSV (``registry_csv``), and the one atomic writer
they all use (``atomic``).
"""
