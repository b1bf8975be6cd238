"""Supernet node: the AIOS-style kernel, the torch LLM engine and the public API."""
