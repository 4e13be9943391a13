"""Process-level helpers: quiet start, bulk imports, compile cache, fast exit, preflight checks."""
