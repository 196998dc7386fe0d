"""Secure edXML document-exchange gateway between the Party, Government and Front networks."""
