"""The file store (file:///abs/root): a local disk or NAS mount; see store.py.

Paths are walked with directory fds and never through a symbolic link (safepath.py);
listings and sidecars are in listing.py.
"""

from cloudmirror.stores.file.store import FileStore

__all__ = ["FileStore"]
