"""Exists verification and usage periods: rules, the pure verifier and periods, the daemon."""
