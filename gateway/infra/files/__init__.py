"""File layouts in a gateway home: the dev PKI directory, the dev CA that issues into it, the registry
CSV.
"""
