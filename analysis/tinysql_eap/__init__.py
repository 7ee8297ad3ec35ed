"""Analysis of tinysql-eap sweeps with h5py, pandas and plotly (Debian's python3 packages).

- ``load``: a sweep folder's per-batch HDF5 files as one tidy pandas DataFrame.
- ``evaluation``: a sweep's evaluation files (circuits run, faithfulness F) as pandas tables.
- ``compare``: consistent edges recomputed from the raw scores, edge-set overlap across cells.
- ``sankey``: a result JSON (ours or the notebook's) drawn again the notebook's way.
"""

from . import compare, evaluation, load, sankey  # noqa: F401

__all__ = ["load", "evaluation", "compare", "sankey"]
