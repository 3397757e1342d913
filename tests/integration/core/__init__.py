"""Integration tests of the chunk-job core (parallel_batch.core) on a real PostgreSQL."""
