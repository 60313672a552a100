"""Azure Blob Storage (and Azurite) behind the store protocol.

store: AzureStore (the rules for credentials, metadata, tags and tiers are in its module
docstring); copy: server-side copy (AzureCopier, Copy Blob); transfer: ranged reads and
staged blocks; auth: endpoints and credentials (shared with the Azure queue feed); mapping:
options and properties; errors: error classification.
"""

from cloudmirror.stores.azure.errors import classify_error
from cloudmirror.stores.azure.store import AzureStore

__all__ = ["AzureStore", "classify_error"]
