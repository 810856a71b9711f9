"""paywatch: a self-hosted crypto payment watcher."""

__version__ = "0.1.0"
