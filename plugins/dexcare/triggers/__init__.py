"""triggers of the DexCare provider."""
