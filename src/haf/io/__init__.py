"""Readers (and, for bags, the writer) of every HANCOCK file format the pipeline consumes."""
