"""The bench layer: benchmarks (each prints a table and writes JSON)."""
