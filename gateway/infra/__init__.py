"""The edges: the only home of SQL, outbound HTTP to peers, and file layouts on disk."""
