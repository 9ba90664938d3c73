"""The certify test suite (a package, so tests/io does not shadow the standard io module)."""
