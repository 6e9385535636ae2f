"""PyTorch reference implementations for the throughput benchmark (not part of genjax)."""
