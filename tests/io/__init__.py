"""Tests of certify.io."""
