"""Declares this folder's finding to the harness plugin (see harness/finding.py)."""

from finding import FINDING  # noqa: F401  (the plugin reads FINDING from this module)
