"""HTTP inference service."""
