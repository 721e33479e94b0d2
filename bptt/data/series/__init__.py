"""The shipped series and texts, read through ``importlib.resources`` (see README.md here)."""
