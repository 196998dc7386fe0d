"""What an agency's own document system runs: signing, opening a delivery, the API client."""
