"""Circuits across cells: the consistent edges recomputed from the raw scores, the result JSON files
a reduce wrote, and how much the cells' edge sets overlap (Jaccard, recurrence counts).

Consistent edges (docs/eap.md): per batch the ``n`` valid edges of largest ``|S_b|`` (or largest
``S_b`` with ``signed_rank``), ties by (upstream index, downstream index); per cell the edges in the
top-n of every batch, scored by the mean over batches of the normalised score and sorted by
``|mean|`` (signed mean with ``signed_rank``) with the same tie rule.
"""

from __future__ import annotations

import glob
import json
import os
import warnings
from itertools import combinations
from typing import Dict, Iterable, List, Optional, Set, Tuple

import numpy as np
import pandas as pd

from . import load

Edge = Tuple[str, str]


def top_n(batch: pd.DataFrame, n: int, signed_rank: bool = False) -> pd.DataFrame:
    """The top-n rows of one batch's edges (columns up_index, down_index, norm_score)."""
    s = batch["norm_score"].to_numpy(dtype=np.float64)
    key = s if signed_rank else np.abs(s)
    order = np.lexsort((batch["down_index"].to_numpy(), batch["up_index"].to_numpy(), -key))
    return batch.iloc[order[: max(n, 0)]]


def consistent_edges(df: pd.DataFrame, top_n_edges: int = 10, signed_rank: bool = False,
                     cells: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """The consistent edges of every complete, non-degenerate cell of ``load.load_sweep``'s table.

    Columns: cell_id, from_edge, to_edge, upstream, downstream, up_index, down_index, score (mean
    normalised score, summed in batch order then divided, as the reducer does), rank.

    A cell is reduced when the table holds all of its batches 0 .. n_batches - 1 (``n_batches``:
    the manifest's count) and it is not degenerate; every other cell is skipped with one
    ``load.SweepWarning`` naming it and why. A reduced cell whose batches share no top-n edge has
    no row (as ``reduce``, which writes an empty edge list).
    """
    columns = ["cell_id", "from_edge", "to_edge", "upstream", "downstream", "up_index", "down_index", "score", "rank"]
    out = []
    wanted = set(cells) if cells is not None else None
    skipped = []
    reduced = 0
    if df.empty:
        warnings.warn(load.SweepWarning("consistent_edges: the table is empty (no usable unit file; see the "
                                        "warnings of load_sweep)"), stacklevel=2)
        return pd.DataFrame(columns=columns)
    present = set(df["cell_id"].astype(str).unique())
    if wanted is not None and wanted - present:
        skipped.append(f"{len(wanted - present)} cell(s) not in the table ({', '.join(sorted(wanted - present)[:3])})")
    for cell, g in df.groupby("cell_id", sort=True, observed=True):
        if wanted is not None and cell not in wanted:
            continue
        got = sorted(int(b) for b in g["batch"].unique())
        n = int(g["n_batches"].iloc[0]) if "n_batches" in g and pd.notna(g["n_batches"].iloc[0]) else None
        if not g["complete"].iloc[0] or (n is not None and got != list(range(n))):
            skipped.append(f"{cell} (incomplete: {len(got)} of {n if n is not None else '?'} batches)")
            continue
        if g["norm_score"].isna().all():
            skipped.append(f"{cell} (degenerate: LD_clean == LD_corr, no normalised score)")
            continue
        reduced += 1
        batches = sorted(g["batch"].unique())
        seen: Dict[Tuple[int, int], list] = {}
        names: Dict[Tuple[int, int], tuple] = {}
        for b in batches:
            t = top_n(g[g["batch"] == b], top_n_edges, signed_rank)
            for r in t.itertuples(index=False):
                k = (int(r.up_index), int(r.down_index))
                seen.setdefault(k, []).append(float(r.norm_score))
                names[k] = (r.from_edge, r.to_edge, r.upstream, r.downstream)
        rows = []
        for k, scores in seen.items():
            if len(scores) != len(batches):
                continue
            total = 0.0
            for x in scores:  # sequential, as the C++ sum
                total += x
            mean = total / len(batches)
            rows.append((k, mean))
        rows.sort(key=lambda km: (-(km[1] if signed_rank else abs(km[1])), km[0][0], km[0][1]))
        for rank, (k, mean) in enumerate(rows):
            f, t_, u, d = names[k]
            out.append({"cell_id": cell, "from_edge": f, "to_edge": t_, "upstream": u, "downstream": d,
                        "up_index": k[0], "down_index": k[1], "score": mean, "rank": rank})
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; ... and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(load.SweepWarning(f"consistent_edges: {len(skipped)} cell(s) skipped"
                                        f"{' (no cell reduced)' if not reduced else ''}: {shown}"), stacklevel=2)
    return pd.DataFrame(out, columns=columns)


def load_results(out: str) -> Dict[str, dict]:
    """The result JSON of every reduced cell: {cell id: results}, from OUT/cells/<id>/eap_results.*.json."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "cells", "*", "eap_results.*.json"))):
        with open(path, encoding="utf-8") as f:
            found[os.path.basename(os.path.dirname(path))] = json.load(f)
    return found


def edge_sets(x) -> Dict[str, Set[Edge]]:
    """{cell id: set of (from_edge, to_edge)} from ``consistent_edges``' table or ``load_results``."""
    if isinstance(x, pd.DataFrame):
        return {str(c): set(zip(g["from_edge"].astype(str), g["to_edge"].astype(str)))
                for c, g in x.groupby("cell_id", sort=True, observed=True)}
    return {c: {(e["from_edge"], e["to_edge"]) for e in r["edges"]} for c, r in x.items()}


def jaccard(a: Set[Edge], b: Set[Edge]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def jaccard_matrix(sets: Dict[str, Set[Edge]]) -> pd.DataFrame:
    """Cell x cell Jaccard similarity of the consistent-edge sets."""
    ids = sorted(sets)
    m = pd.DataFrame(np.eye(len(ids)), index=ids, columns=ids)
    for a, b in combinations(ids, 2):
        m.loc[a, b] = m.loc[b, a] = jaccard(sets[a], sets[b])
    return m


def recurrence(sets: Dict[str, Set[Edge]], settings: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """Every edge with the number of cells it is consistent in (most first) and, given a table of
    cell settings (cell_id, feature, commandset, model, flags), which features / command sets /
    models those cells have."""
    by_edge: Dict[Edge, List[str]] = {}
    for cell, es in sets.items():
        for e in es:
            by_edge.setdefault(e, []).append(cell)
    info = settings.drop_duplicates("cell_id").set_index("cell_id") if settings is not None else None
    rows = []
    for (f, t), cells in by_edge.items():
        row = {"from_edge": f, "to_edge": t, "n_cells": len(cells), "share": len(cells) / max(len(sets), 1),
               "cells": sorted(cells)}
        if info is not None:
            sub = info.loc[[c for c in cells if c in info.index]]
            for col in ("feature", "commandset", "model"):
                if col in sub:
                    row[col + "s"] = sorted({str(v) for v in sub[col]})
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=["from_edge", "to_edge", "n_cells", "share", "cells"])
    return out.sort_values(["n_cells", "from_edge", "to_edge"], ascending=[False, True, True]).reset_index(drop=True)
