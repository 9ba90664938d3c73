"""Engines: one module per engine; see :mod:`certify.engines.base` for the contract."""
