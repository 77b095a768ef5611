"""The JSON writer under its first name, for code that imports ``muonlab.jsonio``: it lives in :mod:`muonlab.files`
with the other files the lab writes (result folders, output checks)."""

from muonlab.files import json_safe, write_json

__all__ = ["json_safe", "write_json"]
