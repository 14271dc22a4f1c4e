"""Reading an upstream index (PEP 503/691 over HTTP, or a local folder): no database here."""
