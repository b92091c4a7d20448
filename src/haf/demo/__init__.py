"""The embedded demo cohort: SYNTHETIC patients in the exact HANCOCK layout and file formats.

``generate_demo_cohort`` writes every file the pipeline reads (structured JSONs, ICD texts, the QuPath
cell-density CSV, TMA maps and core PNGs, UNI-shaped WSI h5 bags, split JSONs) from a seed, with a
latent risk planted in each modality at a configurable strength. See ``docs/demo.md``.
"""

from haf.demo.common import DEFAULT_PATHS, DEFAULT_SIGNAL, README_MARKER, SYNTHETIC_NOTE
from haf.demo.generate import SUMMARY_NAME, TRUTH_NAME, generate_demo_cohort
from haf.demo.wsi import wsi_signal_direction

__all__ = [
    "DEFAULT_PATHS",
    "DEFAULT_SIGNAL",
    "README_MARKER",
    "SUMMARY_NAME",
    "SYNTHETIC_NOTE",
    "TRUTH_NAME",
    "generate_demo_cohort",
    "wsi_signal_direction",
]
