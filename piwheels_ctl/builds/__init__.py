"""A build's outcome: run the queue through the builders, verify what comes back, record it, audit it."""
