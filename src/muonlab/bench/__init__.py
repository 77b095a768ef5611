"""Layer 5: benchmarks (each prints a table and writes JSON)."""
