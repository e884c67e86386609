"""Settings models and loading them from perpcarry.toml and PERPCARRY_... env vars."""
