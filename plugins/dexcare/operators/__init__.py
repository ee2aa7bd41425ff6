"""operators of the DexCare provider."""
