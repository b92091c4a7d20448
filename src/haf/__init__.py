"""HAF-flow: the importable library behind the Snakemake workflow.

The workflow's rule scripts (``workflow/scripts/*.py``) are thin adapters from the ``snakemake``
object to the functions of this package.  The package is importable two ways: installed
(``pip install -e .``) or, inside a rule job under ``--sdm conda`` where Snakemake strips
``PYTHONPATH``, through the ``workflow/scripts/haf`` link next to the scripts (Snakemake puts a
script's own folder on ``sys.path``).
"""

__version__ = "0.1.0"
