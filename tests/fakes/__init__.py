"""Test-only generators and helpers (imported by tests and benchmarks, never by the workflow)."""
