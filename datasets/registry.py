"""Dataset registry: name -> DatasetSpec (datasets/spec.py).

Built-in datasets register themselves when their module is imported; the registry imports every
module of the `datasets` package on the first lookup, so adding a dataset is one new file
`datasets/<name>.py`. Code outside the package (a test, your own script) calls `register_dataset`
before `datasets.build_dataset`.
"""
import importlib
import pkgutil

from datasets.errors import UnknownDatasetError

DATASETS: dict = {}
_discovered = False


def register_dataset(spec):
    """Register a DatasetSpec subclass (instantiated here) or instance under its `name`; returns
    the argument, so it works as a class decorator."""
    instance = spec() if isinstance(spec, type) else spec
    if not instance.name:
        raise ValueError(f"{type(instance).__name__}: a dataset needs a non-empty `name`")
    if instance.name in DATASETS and type(DATASETS[instance.name]) is not type(instance):
        raise ValueError(f"dataset '{instance.name}' is registered twice "
                         f"({type(DATASETS[instance.name]).__name__} and {type(instance).__name__})")
    DATASETS[instance.name] = instance
    from lib.metrics.scores import register_convention_alias

    register_convention_alias(instance.name, instance.convention)  # old recipes: eval.convention: <dataset>
    return spec


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    import datasets

    for info in pkgutil.iter_modules(datasets.__path__):
        if not info.ispkg and not info.name.startswith("_"):
            importlib.import_module(f"datasets.{info.name}")


def dataset_names() -> list[str]:
    _discover()
    return sorted(DATASETS)


def get_dataset(name: str, key: str = "data.dataset"):
    """The registered DatasetSpec `name`; an unknown name raises UnknownDatasetError (a ConfigError)
    naming `key` and the closest registered name."""
    from lib.config import suggest

    _discover()
    if not name:
        raise UnknownDatasetError(f"'{key}' is not set (registered: {', '.join(sorted(DATASETS))})")
    if name not in DATASETS:
        raise UnknownDatasetError(f"unknown dataset '{name}' for '{key}'{suggest(name, list(DATASETS))} "
                                  f"(registered: {', '.join(sorted(DATASETS))})")
    return DATASETS[name]
