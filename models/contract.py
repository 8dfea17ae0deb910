"""The model contract (input type, output forms, progress callbacks): defined in
lib/model_contract.py so the engine can use it without importing `models`; re-exported here."""
from lib.model_contract import INPUT_TYPES, ModelOutput, input_type, notify_progress, parse_output, unwrap

__all__ = ["INPUT_TYPES", "ModelOutput", "input_type", "notify_progress", "parse_output", "unwrap"]
