"""Reliability and security: bad inputs, injected faults, properties, determinism, what the library loads."""
