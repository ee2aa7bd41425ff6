"""sensors of the DexCare provider."""
