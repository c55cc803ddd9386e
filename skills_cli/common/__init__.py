"""Layer 0: dependency-light helpers shared by every layer (typed configs, errors, files)."""
