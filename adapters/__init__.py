"""The outside world (Docker, S3) behind small interfaces that take plain ids (A3)."""
