"""Outbound HTTP that a caller can point at an address: fetched only where it is safe."""
