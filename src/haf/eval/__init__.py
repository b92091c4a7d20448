"""Evaluation: masking protocols, metrics, aggregation, tables and figures."""
