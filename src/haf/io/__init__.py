"""Readers (and, for bags, the writer) of every HANCOCK file format the pipeline consumes.

One module per format: ``clinical`` (clinical and pathological JSON), ``blood`` (long blood table,
reference ranges), ``icd`` (ICD text files), ``cell_density`` (QuPath TMA export), ``tma`` (TMA maps
and core image names), ``wsi`` (UNI h5 listing and header check), ``bags`` (h5 bag contents),
``splits`` (official split JSONs). Every reader raises :class:`haf.errors.HafInputError` naming the
file, the record or line, and the field.
"""
