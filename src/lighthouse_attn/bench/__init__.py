"""GPU benchmarks: `lighthouse-attn bench attention` (one layer) and `bench train` (a model)."""
