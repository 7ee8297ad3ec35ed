"""Two sweeps of the same cells scored by different methods (``method`` = ``eap``, ``eap-ig-inputs``,
``clean-corrupted``; ../shared/spec/circuits.md, "Scoring methods"), side by side, per cell:

- ``spearman``: the rank correlation of the two methods' edge scores (each edge's normalised score
  averaged over the cell's batches, every valid edge of the graph; average ranks for ties);
- ``jaccard``: the overlap of the two methods' consistent edges (``compare.consistent_edges``, the
  reducer's rule, with the manifest's ``top_n`` unless given);
- ``f_a`` / ``f_b``: when both sweeps have evaluation files (``OUT/evaluation/<cell>/bNNNNN.h5``,
  written with an ``[evaluate]`` table), the faithfulness F of each method's consistent circuit:
  the mean over the cell's evaluated batches of the file's ``faithfulness`` entry whose ``circuit``
  is ``consistent`` (as ``reduce`` averages it).

    from tinysql_eap import methods
    t = methods.compare_methods("out/demo", "out/demo-ig")

A cell is compared when it is complete and not degenerate in both sweeps; the others are named in
one ``load.SweepWarning``. The two sweeps must agree on every result-changing setting of a cell
but the method (``method``, ``ig_steps``): a cell whose prompts differ (another seed, model, batch
size...) is left out and named, since its edges could not be compared.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import Dict, Iterable, List, Optional, Tuple

import h5py
import numpy as np
import pandas as pd

from . import compare, load

EVALUATION_FORMAT = "tinysql-eap evaluation v1"
# Manifest keys that may differ between the two sweeps of a comparison.
_METHOD_KEYS = ("method", "ig_steps")
# Manifest keys that say what a cell computes on which prompts: they must agree.
_SAME_KEYS = ("model", "commandset", "hf_model", "tokenizer", "trim_vocab", "feature", "use_novel_names",
              "use_synonyms_field", "use_synonyms_table", "num_fields", "batch_size", "n_batches", "seed", "dtype",
              "downstream_heads", "metric_pairing", "input_node", "logits_node")
_EVAL_NAME = re.compile(r"^b(\d{5,})\.h5$")

COLUMNS = ["cell_id", "method_a", "method_b", "n_edges", "spearman", "consistent_a", "consistent_b", "common",
           "jaccard", "f_a", "f_b", "evaluated_a", "evaluated_b"]


def method_of(cell: dict) -> str:
    """A manifest cell's method as a label: ``eap`` (also for manifests written before methods
    existed), ``clean-corrupted``, ``eap-ig-inputs (m=5)``."""
    m = str(cell.get("method", "eap"))
    return f"{m} (m={cell['ig_steps']})" if m == "eap-ig-inputs" and "ig_steps" in cell else m


def spearman(x, y) -> float:
    """Spearman's rank correlation of two equally long sequences (average ranks for ties); NaN when
    either is constant or shorter than 2."""
    a = pd.Series(np.asarray(x, dtype=np.float64)).rank(method="average").to_numpy()
    b = pd.Series(np.asarray(y, dtype=np.float64)).rank(method="average").to_numpy()
    if len(a) != len(b):
        raise ValueError(f"spearman: {len(a)} values against {len(b)}")
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def mean_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, edge) of ``load.load_sweep``'s table: the normalised score averaged over batches.
    Columns cell_id, up_index, down_index, from_edge, to_edge, score."""
    if df.empty:
        return pd.DataFrame(columns=["cell_id", "up_index", "down_index", "from_edge", "to_edge", "score"])
    g = df.groupby(["cell_id", "up_index", "down_index"], observed=True, sort=True)
    out = g.agg(from_edge=("from_edge", "first"), to_edge=("to_edge", "first"), score=("norm_score", "mean"))
    return out.reset_index()


def _scalar(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.shape == ():
        return v.item()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_faithfulness(out: str, cell: dict, circuit: str = "consistent") -> Tuple[float, int]:
    """(F, batches): the mean over the cell's evaluation files of the ``faithfulness`` of circuit
    ``circuit``, and how many files it averages; (NaN, 0) without evaluation files. A file of
    another cell, batch, scoring run (``settings_hash``) or evaluation (``evaluation_hash``), or one
    that cannot be read, is left out with a ``load.SweepWarning`` naming it."""
    folder = os.path.join(out, "evaluation", cell["id"])
    if not os.path.isdir(folder):
        return float("nan"), 0
    values: List[float] = []
    bad: List[str] = []
    for name in sorted(os.listdir(folder)):
        m = _EVAL_NAME.match(name)
        if not m:
            continue
        path = os.path.join(folder, name)
        batch = int(m.group(1))
        if batch >= int(cell.get("n_batches", batch + 1)):
            continue
        try:
            with h5py.File(path, "r") as f:
                a = {k: _scalar(v) for k, v in f.attrs.items()}
                if a.get("format") != EVALUATION_FORMAT:
                    raise ValueError(f"not an evaluation file (format {a.get('format')!r})")
                for key, want in (("cell_id", cell["id"]), ("batch_index", batch),
                                  ("settings_hash", cell.get("settings_hash")),
                                  ("evaluation_hash", cell.get("evaluation_hash"))):
                    if want is not None and a.get(key) != want:
                        raise ValueError(f"{key} {a.get(key)!r}, not {want!r}")
                names = [_scalar(n) for n in f["circuit"][()]]
                f_values = np.asarray(f["faithfulness"][()], dtype=np.float64)
            if len(names) != len(f_values):
                raise ValueError(f"{len(names)} circuits, {len(f_values)} faithfulness values")
        except (OSError, KeyError, ValueError) as e:
            bad.append(f"{path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if circuit in names:
            values.append(float(f_values[names.index(circuit)]))
    if bad:
        warnings.warn(load.SweepWarning(f"read_faithfulness: {len(bad)} evaluation file(s) left out: "
                                        + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")), stacklevel=2)
    if not values:
        return float("nan"), 0
    total = 0.0
    for x in values:  # sequential, as the C++ sum
        total += x
    return total / len(values), len(values)


def _differences(a: dict, b: dict) -> List[str]:
    return [k for k in _SAME_KEYS if k in a and k in b and a[k] != b[k]]


def compare_methods(out_a: str, out_b: str, top_n_edges: Optional[int] = None, signed_rank: bool = False,
                    cells: Optional[Iterable[str]] = None, circuit: str = "consistent") -> pd.DataFrame:
    """One row per cell of both sweeps (columns ``COLUMNS``): the two methods, the number of valid
    edges, ``spearman`` of the mean normalised edge scores, the consistent edges of each and the
    ones in common, their ``jaccard``, and ``f_a`` / ``f_b``, the faithfulness of each method's
    ``circuit`` (NaN without evaluation files; ``evaluated_a`` / ``_b`` count the batches averaged).

    ``top_n_edges`` defaults to each cell's ``top_n`` in the manifest (10 when absent). Cells that
    are not complete and non-degenerate in both, or whose prompts differ between the sweeps, are
    left out with one ``load.SweepWarning`` naming them."""
    ma, mb = load.read_manifest(out_a), load.read_manifest(out_b)
    ca = {c["id"]: c for c in ma["cells"]}
    cb = {c["id"]: c for c in mb["cells"]}
    wanted = set(cells) if cells is not None else None
    common = sorted(k for k in ca if k in cb and (wanted is None or k in wanted))
    skipped: List[str] = []
    if wanted is not None:
        skipped += [f"{k} (not in both sweeps)" for k in sorted(wanted - set(common))]
    usable = []
    for k in common:
        diff = _differences(ca[k], cb[k])
        if diff:
            skipped.append(f"{k} (the sweeps differ in {', '.join(diff)})")
        else:
            usable.append(k)
    rows = []
    if usable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", load.SweepWarning)  # summarised below, per cell
            da = load.load_sweep(out_a, cells=usable, complete_only=True)
            db = load.load_sweep(out_b, cells=usable, complete_only=True)
        sa, sb = mean_scores(da), mean_scores(db)
        for k in usable:
            ea, eb = sa[sa["cell_id"] == k], sb[sb["cell_id"] == k]
            if ea.empty or eb.empty:
                skipped.append(f"{k} (not complete in {'both sweeps' if ea.empty and eb.empty else out_a if ea.empty else out_b})")
                continue
            if ea["score"].isna().all() or eb["score"].isna().all():
                skipped.append(f"{k} (degenerate: LD_clean == LD_corr)")
                continue
            m = ea.merge(eb, on=["up_index", "down_index"], how="inner", suffixes=("_a", "_b"))
            if len(m) != len(ea) or len(m) != len(eb):
                skipped.append(f"{k} (the graphs differ: {len(ea)} and {len(eb)} valid edges)")
                continue
            n = top_n_edges if top_n_edges is not None else int(ca[k].get("top_n", 10))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", load.SweepWarning)
                cons_a = compare.consistent_edges(da[da["cell_id"] == k], n, signed_rank)
                cons_b = compare.consistent_edges(db[db["cell_id"] == k], n, signed_rank)
            set_a = set(zip(cons_a["from_edge"].astype(str), cons_a["to_edge"].astype(str)))
            set_b = set(zip(cons_b["from_edge"].astype(str), cons_b["to_edge"].astype(str)))
            f_a, n_a = read_faithfulness(out_a, ca[k], circuit)
            f_b, n_b = read_faithfulness(out_b, cb[k], circuit)
            rows.append({"cell_id": k, "method_a": method_of(ca[k]), "method_b": method_of(cb[k]), "n_edges": len(m),
                         "spearman": spearman(m["score_a"], m["score_b"]), "consistent_a": len(set_a),
                         "consistent_b": len(set_b), "common": len(set_a & set_b),
                         "jaccard": compare.jaccard(set_a, set_b), "f_a": f_a, "f_b": f_b, "evaluated_a": n_a,
                         "evaluated_b": n_b})
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; ... and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(load.SweepWarning(f"compare_methods: {len(skipped)} cell(s) not compared: {shown}"), stacklevel=2)
    return pd.DataFrame(rows, columns=COLUMNS)
