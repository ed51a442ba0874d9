"""Stages 1 and 5: where images and labels come from, the bins and their manifest, and scoring the results.

Imports the ground floor only (docs/architecture.md).
"""
