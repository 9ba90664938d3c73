"""Readers for model and specification files."""
