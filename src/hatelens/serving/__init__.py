"""Serving: the FastAPI app, micro-batching, the SQLite prediction log and its monitor."""
