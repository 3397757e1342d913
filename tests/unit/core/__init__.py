"""Unit tests of the chunk-job core (parallel_batch.core): no database."""
