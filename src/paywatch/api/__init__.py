"""The merchant HTTP API (FastAPI)."""
