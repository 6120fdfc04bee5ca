"""Codecs: each protocol parsed from bytes into a value and encoded back; no state, no I/O."""
