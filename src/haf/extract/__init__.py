"""TMA feature extraction: the encoder registry (``registry``), core tiling (``tiling``), the weight-free
demo encoder (``texture``), the resumable extraction pipeline (``extraction``) and synthetic H&E-like
cores for benchmarks and tests (``synthetic``). Nothing here imports torch at package import time.
"""
