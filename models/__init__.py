"""Networks built only from lib.sparse layers, looked up by class name: `build_model(cfg.model, ...)`.

Importing this package registers every model; see models/build.py for the arg checks.
"""
from models import point_transformer, ptv3, res16unet, transformer_unet  # noqa: F401  (register their models)
from models.build import MODELS, ModelConfigError, build_model, register_model

__all__ = ["MODELS", "ModelConfigError", "build_model", "register_model"]
