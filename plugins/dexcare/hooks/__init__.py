"""hooks of the DexCare provider."""
