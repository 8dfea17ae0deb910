"""Networks built only from lib.sparse layers, looked up by class name: `build_model(cfg.model, ...)`.

Importing this package registers every model; see models/build.py for the arg checks.
"""
from models import res16unet  # noqa: F401  (registers the Res16UNet family)
from models import transformer_unet  # noqa: F401  (registers the CodedVTR / VTR family)
from models.build import MODELS, ModelConfigError, build_model, register_model

__all__ = ["MODELS", "ModelConfigError", "build_model", "register_model"]
