"""Circuits across cells: the consistent edges recomputed from the raw scores, the result JSON files
a reduce wrote, and how much the cells' edge sets overlap (Jaccard, recurrence counts).

Consistent edges (docs/eap.md): per batch the ``n`` valid edges of largest ``|S_b|`` (or largest
``S_b`` with ``signed_rank``), ties by (upstream index, downstream index); per cell the edges in the
top-n of every batch, scored by the mean over batches of the normalised score and sorted by
``|mean|`` (signed mean with ``signed_rank``) with the same tie rule.

Cell quality: the cross-cell helpers (``edge_sets``, ``jaccard_matrix``, ``recurrence``) leave
flagged cells out by default (quality flags ``degenerate``, ``low_effect``, ``low_accuracy``: the
corruption barely moves the metric, so the normalised scores divide by a tiny number, or the model
does not do the task), as the summary page of ``reduce`` does; every cell left out is named in a
``load.SweepWarning``, and ``include_flagged=True`` puts them back (``reduce --include-flagged``).
``consistent_edges`` itself reduces every complete cell, flagged or not (``reduce`` writes their
JSON), and carries each cell's flags in a ``flags`` column.
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
    normalised score, summed in batch order then divided, as the reducer does), rank, flags (the
    cell's quality flags from ``load_sweep``'s ``flags`` column, "" for none; None when the table
    has no such column). Flagged cells are reduced like any other; ``edge_sets`` leaves them out.

    A cell is reduced when the table holds all of its batches 0 .. n_batches - 1 (``n_batches``:
    the manifest's count) and it is not degenerate; every other cell is skipped with one
    ``load.SweepWarning`` naming it and why. A reduced cell whose batches share no top-n edge has
    no row (as ``reduce``, which writes an empty edge list).
    """
    columns = ["cell_id", "from_edge", "to_edge", "upstream", "downstream", "up_index", "down_index", "score", "rank",
               "flags"]
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
        flags = str(g["flags"].iloc[0]) if "flags" in g and pd.notna(g["flags"].iloc[0]) else None
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
                        "up_index": k[0], "down_index": k[1], "score": mean, "rank": rank, "flags": flags})
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


def results_quality(results: Dict[str, dict]) -> pd.DataFrame:
    """The quality ``reduce`` wrote into each result JSON (``parameters.quality``), per cell of
    ``load_results``' dict: cell_id, effect, effect_spread, ld_spread, clean_accuracy, flip_fraction
    (NaN where the JSON says null: top tokens not recorded), flags (comma-separated, "" for none),
    flagged, reasons, thresholds (dict). A JSON without ``quality`` (an older reduce) gives NaN
    numbers, flags None and flagged <NA>."""
    rows = []
    for cell, r in sorted(results.items()):
        q = (r.get("parameters") or {}).get("quality")
        if not isinstance(q, dict):
            rows.append({"cell_id": cell, "effect": np.nan, "effect_spread": np.nan, "ld_spread": np.nan,
                         "clean_accuracy": np.nan, "flip_fraction": np.nan, "flags": None, "flagged": pd.NA,
                         "reasons": None, "thresholds": None})
            continue
        ff = q.get("flip_fraction")
        rows.append({"cell_id": cell, "effect": q.get("effect"), "effect_spread": q.get("effect_spread_over_batches"),
                     "ld_spread": q.get("ld_spread_over_prompts"), "clean_accuracy": q.get("clean_accuracy"),
                     "flip_fraction": np.nan if ff is None else float(ff), "flags": load.join_flags(q.get("flags")),
                     "flagged": bool(q.get("flags")), "reasons": list(q.get("reasons") or []),
                     "thresholds": q.get("thresholds")})
    df = pd.DataFrame(rows, columns=["cell_id", "effect", "effect_spread", "ld_spread", "clean_accuracy",
                                     "flip_fraction", "flags", "flagged", "reasons", "thresholds"])
    df["flagged"] = df["flagged"].astype("boolean")
    return df


def _flags_of(quality) -> Dict[str, Optional[List[str]]]:
    """{cell: list of flags, None when unknown} from a table with cell_id and flags columns
    (``load.cell_quality``, ``load.cell_summary``, ``results_quality``, ``consistent_edges``,
    ``load_sweep``), a ``load_results`` dict, or a {cell: flags} dict (list or comma string)."""
    found: Dict[str, Optional[List[str]]] = {}
    if quality is None:
        return found
    if isinstance(quality, pd.DataFrame):
        if "cell_id" not in quality or "flags" not in quality:
            raise ValueError("quality: a table needs cell_id and flags columns (load.cell_quality)")
        for c, f in zip(quality["cell_id"].astype(str), quality["flags"]):
            if c not in found or found[c] is None:
                found[c] = None if f is None or (isinstance(f, float) and np.isnan(f)) else load.split_flags(f)
        return found
    for c, v in quality.items():
        if isinstance(v, dict) and ("edges" in v or "parameters" in v):  # a result JSON
            q = (v.get("parameters") or {}).get("quality")
            found[c] = load.split_flags(q.get("flags")) if isinstance(q, dict) else None
        else:
            found[c] = None if v is None else load.split_flags(v)
    return found


def _leave_out_flagged(sets: Dict[str, Set[Edge]], flags: Dict[str, Optional[List[str]]], include_flagged: bool,
                       what: str) -> Dict[str, Set[Edge]]:
    """``sets`` without its flagged cells (unless ``include_flagged``), with a SweepWarning naming them."""
    if include_flagged or not flags:
        return sets
    flagged = [(c, flags[c]) for c in sorted(sets) if flags.get(c)]
    if not flagged:
        return sets
    out = {c: e for c, e in sets.items() if not flags.get(c)}
    shown = "; ".join(f"{c} ({', '.join(f)})" for c, f in flagged[:5])
    more = f"; ... and {len(flagged) - 5} more" if len(flagged) > 5 else ""
    warnings.warn(load.SweepWarning(f"{what}: {len(flagged)} flagged cell(s) left out (include_flagged=True puts "
                                    f"them back): {shown}{more}"), stacklevel=3)
    return out


def edge_sets(x, quality=None, include_flagged: bool = False) -> Dict[str, Set[Edge]]:
    """{cell id: set of (from_edge, to_edge)} from ``consistent_edges``' table or ``load_results``.

    Flagged cells (quality flags, module docstring) are left out with a ``load.SweepWarning`` naming
    them; ``include_flagged=True`` keeps them. The flags come from ``quality`` when given (a
    ``load.cell_quality`` / ``cell_summary`` / ``results_quality`` table, or {cell: flags}), else
    from the input: the ``flags`` column of ``consistent_edges``' table, ``parameters.quality`` of
    the result JSONs. A cell whose quality is unknown (a JSON of an older reduce) is kept."""
    if isinstance(x, pd.DataFrame):
        sets = {str(c): set(zip(g["from_edge"].astype(str), g["to_edge"].astype(str)))
                for c, g in x.groupby("cell_id", sort=True, observed=True)}
        flags = _flags_of(x) if "flags" in x else {}
    else:
        sets = {c: {(e["from_edge"], e["to_edge"]) for e in r["edges"]} for c, r in x.items()}
        flags = _flags_of(x)
    if quality is not None:
        flags.update(_flags_of(quality))
    return _leave_out_flagged(sets, flags, include_flagged, "edge_sets")


def jaccard(a: Set[Edge], b: Set[Edge]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def jaccard_matrix(sets: Dict[str, Set[Edge]], quality=None, include_flagged: bool = False) -> pd.DataFrame:
    """Cell x cell Jaccard similarity of the consistent-edge sets.

    ``edge_sets`` has already left flagged cells out; given ``quality`` (as for ``edge_sets``) the
    flagged cells among ``sets`` are left out here too, with a ``load.SweepWarning`` naming them
    (``include_flagged=True`` keeps them). Without ``quality`` every cell of ``sets`` is used."""
    sets = _leave_out_flagged(sets, _flags_of(quality), include_flagged, "jaccard_matrix")
    ids = sorted(sets)
    m = pd.DataFrame(np.eye(len(ids)), index=ids, columns=ids)
    for a, b in combinations(ids, 2):
        m.loc[a, b] = m.loc[b, a] = jaccard(sets[a], sets[b])
    return m


def recurrence(sets: Dict[str, Set[Edge]], settings: Optional[pd.DataFrame] = None, quality=None,
               include_flagged: bool = False) -> pd.DataFrame:
    """Every edge with the number of cells it is consistent in (most first) and, given a table of
    cell settings (cell_id, feature, commandset, model, flags), which features / command sets /
    models those cells have.

    Flagged cells: as ``jaccard_matrix`` (left out when ``quality`` says so, with a warning;
    ``edge_sets`` has already left them out of its sets by default); without ``quality``, a
    ``flags`` column of ``settings`` (``load_sweep``'s) is used. ``share`` counts the cells used."""
    if quality is None and settings is not None and "flags" in settings and "cell_id" in settings:
        quality = settings[["cell_id", "flags"]]
    sets = _leave_out_flagged(sets, _flags_of(quality), include_flagged, "recurrence")
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
