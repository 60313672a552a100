"""Amazon S3 (and S3-compatible endpoints: moto, LocalStack) behind the store protocol.

store: S3Store; copy: server-side copy (S3Copier); fence: the bucket-policy fence
(S3Fencer); transfer: multipart upload and copy; common: parameter / response mapping and
the client configuration; errors: error classification.
"""

from cloudmirror.stores.s3.common import client_config
from cloudmirror.stores.s3.errors import classify_error
from cloudmirror.stores.s3.store import S3Store

__all__ = ["S3Store", "classify_error", "client_config"]
