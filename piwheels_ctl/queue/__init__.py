"""Which (version, ABI) pairs need a build: the pending pairs, claims on them, coverage."""
