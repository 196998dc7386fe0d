"""The domain: vocabulary, agency codes and the registry, the edXML model and its one hardened parser,
the sealed transfer. Imports nothing of the gateway but ``gateway.errors``.
"""
