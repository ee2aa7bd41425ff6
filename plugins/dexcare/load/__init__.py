"""load of the DexCare provider."""
