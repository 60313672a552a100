"""One suite that every store passes (memory, file, s3 on moto)."""
