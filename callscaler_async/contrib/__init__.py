"""Integrations with web frameworks (optional extras): ``contrib.fastapi``."""
