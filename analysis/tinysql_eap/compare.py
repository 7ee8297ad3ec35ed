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

    ``df`` may also be a wide table (``load.load_sweep(..., wide=True)``, without ``top_k`` or
    with ``top_k >= top_n_edges`` and the same ``signed_rank``): it is reduced one cell at a time,
    so a sweep of hundreds of cells needs no tidy table. An ``arch`` column (``load.arch_of``)
    comes from the table's.
    """
    if "scores" in df.columns and df.attrs.get("format") == "wide":
        return _consistent_edges_wide(df, top_n_edges, signed_rank, cells)
    columns = CONSISTENT_COLUMNS
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
        arch = str(g["arch"].iloc[0]) if "arch" in g else None
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
                        "up_index": k[0], "down_index": k[1], "score": mean, "rank": rank, "flags": flags,
                        "arch": arch})
    if skipped:
        shown = "; ".join(skipped[:5]) + (f"; ... and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(load.SweepWarning(f"consistent_edges: {len(skipped)} cell(s) skipped"
                                        f"{' (no cell reduced)' if not reduced else ''}: {shown}"), stacklevel=2)
    return pd.DataFrame(out, columns=columns)


CONSISTENT_COLUMNS = ["cell_id", "from_edge", "to_edge", "upstream", "downstream", "up_index", "down_index", "score",
                      "rank", "flags", "arch"]


def _consistent_edges_wide(wide: pd.DataFrame, top_n_edges: int, signed_rank: bool, cells) -> pd.DataFrame:
    k = wide.attrs.get("top_k")
    if k is not None and (int(k) < top_n_edges or bool(wide.attrs.get("signed_rank")) != bool(signed_rank)):
        raise ValueError(f"consistent_edges: the wide table keeps the top {k} edges per batch "
                         f"(signed_rank={wide.attrs.get('signed_rank')}): it cannot give the top {top_n_edges} "
                         f"(signed_rank={signed_rank}); load it with top_k >= top_n_edges")
    wanted = set(cells) if cells is not None else None
    frames, skipped = [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for cell, g in wide.groupby("cell_id", sort=True, observed=True):
            if wanted is not None and cell not in wanted:
                continue
            sub = g.copy()
            sub.attrs = wide.attrs
            frames.append(consistent_edges(load.wide_to_tidy(sub), top_n_edges, signed_rank))
    for w in caught:
        if issubclass(w.category, load.SweepWarning) and "cell(s) skipped" in str(w.message):
            skipped.append(str(w.message).split(": ", 1)[1])
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    present = set(wide["cell_id"].astype(str)) if len(wide) else set()
    if wanted is not None and wanted - present:
        skipped.insert(0, f"{len(wanted - present)} cell(s) not in the table ({', '.join(sorted(wanted - present)[:3])})")
    if skipped or wide.empty:
        shown = "; ".join(skipped[:5]) + (f"; ... and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(load.SweepWarning(f"consistent_edges: {len(skipped)} cell(s) skipped: {shown}" if skipped else
                                        "consistent_edges: the table is empty (no usable unit file; see the "
                                        "warnings of load_sweep)"), stacklevel=3)
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=CONSISTENT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CONSISTENT_COLUMNS]


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


class EdgeSets(dict):
    """{cell id: set of (from_edge, to_edge)} with ``arch``: {cell id: its architecture
    (``load.arch_of``), None when unknown}. Node names mean something only within one architecture
    (``l0.h0`` of BM1 is not ``l0.h0`` of BM2): ``jaccard_matrix`` and ``recurrence`` never compare
    sets of two architectures."""

    def __init__(self, sets=(), arch: Optional[Dict[str, Optional[str]]] = None):
        super().__init__(sets)
        self.arch = {c: (arch or {}).get(c) for c in self}


def _arch_of_table(t: pd.DataFrame) -> Dict[str, str]:
    """{cell: arch} from a table with cell_id and either arch or model, n_layers, n_heads."""
    if t is None or "cell_id" not in t:
        return {}
    if "arch" in t:
        return {str(c): str(a) for c, a in zip(t["cell_id"], t["arch"]) if a is not None and pd.notna(a)}
    if all(k in t for k in ("model", "n_layers", "n_heads")):
        return {str(c): load.arch_of(m, l, h) for c, m, l, h in zip(t["cell_id"], t["model"], t["n_layers"],
                                                                     t["n_heads"])}
    return {}


def _arch_of_result(r: dict) -> Optional[str]:
    m = r.get("metadata") or {}
    if all(m.get(k) is not None for k in ("model", "n_layers", "n_heads")):
        return load.arch_of(m["model"], m["n_layers"], m["n_heads"])
    return None


def _archs(sets, arch=None) -> Dict[str, Optional[str]]:
    """Each cell's architecture: from ``arch`` ({cell: arch}, or a table: ``_arch_of_table``),
    else the sets' own (``EdgeSets.arch``), else None."""
    found = dict(getattr(sets, "arch", {}) or {})
    if isinstance(arch, pd.DataFrame):
        found.update(_arch_of_table(arch))
    elif arch is not None:
        found.update({str(c): a for c, a in arch.items()})
    return {c: found.get(c) for c in sets}


def _leave_out_flagged(sets: Dict[str, Set[Edge]], flags: Dict[str, Optional[List[str]]], include_flagged: bool,
                       what: str) -> Dict[str, Set[Edge]]:
    """``sets`` without its flagged cells (unless ``include_flagged``), with a SweepWarning naming them."""
    if include_flagged or not flags:
        return sets
    flagged = [(c, flags[c]) for c in sorted(sets) if flags.get(c)]
    if not flagged:
        return sets
    out = EdgeSets({c: e for c, e in sets.items() if not flags.get(c)}, getattr(sets, "arch", None))
    shown = "; ".join(f"{c} ({', '.join(f)})" for c, f in flagged[:5])
    more = f"; ... and {len(flagged) - 5} more" if len(flagged) > 5 else ""
    warnings.warn(load.SweepWarning(f"{what}: {len(flagged)} flagged cell(s) left out (include_flagged=True puts "
                                    f"them back): {shown}{more}"), stacklevel=3)
    return out


def edge_sets(x, quality=None, include_flagged: bool = False, arch=None) -> EdgeSets:
    """{cell id: set of (from_edge, to_edge)} from ``consistent_edges``' table or ``load_results``,
    as an ``EdgeSets`` that knows each cell's architecture (the table's ``arch`` column, the JSON's
    metadata ``model``, ``n_layers``, ``n_heads``; or ``arch``: {cell: arch} or a settings table).

    Flagged cells (quality flags, module docstring) are left out with a ``load.SweepWarning`` naming
    them; ``include_flagged=True`` keeps them. The flags come from ``quality`` when given (a
    ``load.cell_quality`` / ``cell_summary`` / ``results_quality`` table, or {cell: flags}), else
    from the input: the ``flags`` column of ``consistent_edges``' table, ``parameters.quality`` of
    the result JSONs. A cell whose quality is unknown (a JSON of an older reduce) is kept."""
    if isinstance(x, pd.DataFrame):
        sets = {str(c): set(zip(g["from_edge"].astype(str), g["to_edge"].astype(str)))
                for c, g in x.groupby("cell_id", sort=True, observed=True)}
        flags = _flags_of(x) if "flags" in x else {}
        archs = _arch_of_table(x.drop_duplicates("cell_id")) if "arch" in x else {}
    else:
        sets = {c: {(e["from_edge"], e["to_edge"]) for e in r["edges"]} for c, r in x.items()}
        flags = _flags_of(x)
        archs = {c: _arch_of_result(r) for c, r in x.items()}
    if quality is not None:
        flags.update(_flags_of(quality))
    sets = EdgeSets(sets, archs)
    sets.arch = _archs(sets, arch)
    return _leave_out_flagged(sets, flags, include_flagged, "edge_sets")


def jaccard(a: Set[Edge], b: Set[Edge]) -> float:
    """|a & b| / |a | b|; two empty sets are identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def jaccard_matrix(sets: Dict[str, Set[Edge]], quality=None, include_flagged: bool = False,
                   arch=None) -> pd.DataFrame:
    """Cell x cell Jaccard similarity of the consistent-edge sets, cells ordered by architecture
    then id. Two cells of different architectures are never compared: their entry is NaN (node
    names of BM1 and BM2 share no meaning). The architectures come from ``arch`` ({cell: arch}, or
    a table with cell_id and arch, or model, n_layers, n_heads) or from ``edge_sets``' result;
    cells of unknown architecture are compared only with each other.

    ``edge_sets`` has already left flagged cells out; given ``quality`` (as for ``edge_sets``) the
    flagged cells among ``sets`` are left out here too, with a ``load.SweepWarning`` naming them
    (``include_flagged=True`` keeps them). Without ``quality`` every cell of ``sets`` is used."""
    archs = _archs(sets, arch)
    sets = _leave_out_flagged(sets, _flags_of(quality), include_flagged, "jaccard_matrix")
    ids = sorted(sets, key=lambda c: (str(archs.get(c)), c))
    m = pd.DataFrame(np.eye(len(ids)), index=ids, columns=ids)
    for a, b in combinations(ids, 2):
        m.loc[a, b] = m.loc[b, a] = jaccard(sets[a], sets[b]) if archs.get(a) == archs.get(b) else np.nan
    return m


def jaccard_by_arch(sets: Dict[str, Set[Edge]], quality=None, include_flagged: bool = False,
                    arch=None) -> Dict[Optional[str], pd.DataFrame]:
    """{architecture: ``jaccard_matrix`` of its cells}."""
    archs = _archs(sets, arch)
    sets = _leave_out_flagged(sets, _flags_of(quality), include_flagged, "jaccard_by_arch")
    out = {}
    for a in sorted({archs.get(c) for c in sets}, key=str):
        out[a] = jaccard_matrix({c: e for c, e in sets.items() if archs.get(c) == a})
    return out


def recurrence(sets: Dict[str, Set[Edge]], settings: Optional[pd.DataFrame] = None, quality=None,
               include_flagged: bool = False, arch=None) -> pd.DataFrame:
    """Every edge of every architecture with the number of cells of that architecture it is
    consistent in (most first) and, given a table of cell settings (cell_id, feature, commandset,
    model, flags), which features / command sets / models those cells have. The same name in two
    architectures is two rows (column ``arch``; None when unknown): ``share`` is the fraction of
    that architecture's cells. Architectures: ``arch``, else the settings table (an ``arch``
    column, or model, n_layers and n_heads), else ``edge_sets``' result.

    Flagged cells: as ``jaccard_matrix`` (left out when ``quality`` says so, with a warning;
    ``edge_sets`` has already left them out of its sets by default); without ``quality``, a
    ``flags`` column of ``settings`` (``load_sweep``'s) is used. ``share`` counts the cells used."""
    if quality is None and settings is not None and "flags" in settings and "cell_id" in settings:
        quality = settings[["cell_id", "flags"]]
    archs = _archs(sets, arch if arch is not None else
                   (settings.drop_duplicates("cell_id") if settings is not None and _arch_of_table(settings) else None))
    sets = _leave_out_flagged(sets, _flags_of(quality), include_flagged, "recurrence")
    by_edge: Dict[tuple, List[str]] = {}
    n_arch: Dict[Optional[str], int] = {}
    for cell, es in sets.items():
        n_arch[archs.get(cell)] = n_arch.get(archs.get(cell), 0) + 1
        for e in es:
            by_edge.setdefault((archs.get(cell),) + tuple(e), []).append(cell)
    info = settings.drop_duplicates("cell_id").set_index("cell_id") if settings is not None else None
    rows = []
    for (a, f, t), cells in by_edge.items():
        row = {"arch": a, "from_edge": f, "to_edge": t, "n_cells": len(cells), "share": len(cells) / max(n_arch[a], 1),
               "cells": sorted(cells)}
        if info is not None:
            sub = info.loc[[c for c in cells if c in info.index]]
            for col in ("feature", "commandset", "model"):
                if col in sub:
                    row[col + "s"] = sorted({str(v) for v in sub[col]})
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=["arch", "from_edge", "to_edge", "n_cells", "share", "cells"])
    out["_a"] = out["arch"].astype(str)
    out = out.sort_values(["n_cells", "_a", "from_edge", "to_edge"], ascending=[False, True, True, True])
    return out.drop(columns="_a").reset_index(drop=True)
