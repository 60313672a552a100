"""Google Cloud Storage (and fake-gcs-server) behind the store protocol.

store: GCSStore; connection: the client, its thread pool and the object requests the store
and its copier share; copy: server-side copy (GCSCopier, objects.rewrite); transfer:
resumable uploads and streamed downloads; common: the client factory, option / resource
mapping and error classification.
"""

from cloudmirror.stores.gcs.common import classify_error
from cloudmirror.stores.gcs.store import GCSStore

__all__ = ["GCSStore", "classify_error"]
