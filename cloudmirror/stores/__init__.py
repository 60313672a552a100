"""Stores, registered by URL scheme and imported lazily.

`open_store(location)` returns a Store for the location. A provider whose SDK is not
installed raises StoreUnavailable with an install hint.
"""

from __future__ import annotations

import importlib

from cloudmirror.location import Location
from cloudmirror.stores.base import Store

# scheme -> (module or provider sub-package, class, pip extra that provides the SDK)
_REGISTRY: dict[str, tuple[str, str, str | None]] = {
    "s3": ("cloudmirror.stores.s3", "S3Store", None),
    "gs": ("cloudmirror.stores.gcs", "GCSStore", "gcs"),
    "az": ("cloudmirror.stores.azure", "AzureStore", "azure"),
    "file": ("cloudmirror.stores.file", "FileStore", None),
    "memory": ("cloudmirror.stores.memory", "MemoryStore", None),
}


class StoreUnavailable(RuntimeError):
    """No store can be opened for this scheme here (unknown scheme or SDK missing)."""


def open_store(location: Location) -> Store:
    """Build the store for a location. Raises StoreUnavailable."""
    try:
        module_name, cls_name, extra = _REGISTRY[location.scheme]
    except KeyError:
        raise StoreUnavailable(f"no store for scheme {location.scheme!r}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        hint = f"pip install 'cloudmirror[{extra}]'" if extra else "reinstall cloudmirror"
        raise StoreUnavailable(f"{location.scheme}:// needs {e.name}: {hint}") from None
    return getattr(module, cls_name)(location)
