"""Shared machinery of voxseg: config, sparse core, training engine, metrics, export.

`lib` never imports `models` or `datasets`; main.py wires them together.
"""

IGNORE_INDEX = -100  # the ignore label everywhere (torch's cross-entropy default)
