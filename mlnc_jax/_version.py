"""The package version (also in `pyproject.toml`); a leaf every stage may import."""

__version__ = "0.1.0"
