"""A sweep's evaluation files (circuits run with everything else ablated: docs/faithfulness.md) as
pandas tables.

Layout (written by ``tinysql-eap run`` for a job with an ``[evaluate]`` table)::

    OUT/sweep.json                           each evaluated cell has "evaluation" (the [evaluate]
                                             table as text) and "evaluation_hash"
    OUT/evaluation/<cell id>/b00000.h5       one per batch: per circuit its name, k, edge count,
                                             F and each prompt's logit difference; the batch's
                                             clean and corrupt LDs; the cell's baselines
    OUT/failed/<cell id>.evaluate.b00000.txt an evaluation unit that failed (one line: the error)

As for unit files (``load``), the manifest is the authority and every evaluation file is read
whole and checked before it is used (``inventory``): ``ok``; ``damaged`` (cannot be read whole);
``foreign`` (another cell's or batch's, or another ``settings_hash``: other scores; or another
``evaluation_hash``: another ``[evaluate]`` table or top_n; or other circuits than the cell's first
batch); ``failed`` / ``missing``; ``extra`` (beyond the manifest's batches, of a cell the manifest
does not list or did not evaluate). Damaged and foreign files are left out with a
``load.SweepWarning`` naming them, or raise ``load.SweepError`` with ``strict=True``.

``load_evaluations(out)``: one row per (cell, batch, circuit): the cell's grid and settings, batch,
circuit, k, edges, F; ``prompts=True``: one row per prompt with its logit differences.
``circuit_summary(out)``: per (cell, circuit) F (mean over batches), spread (sample standard
deviation over batches), edges. ``cell_faithfulness(out)``: per cell the consistent circuit's F,
the baselines' F, the top-k curve and its area on a log-k axis (``log_k_auc``), as the cell's
JSON ``faithfulness`` object has them (``faithfulness_object`` builds that object).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import Dict, Iterable, List, Optional, Sequence

import h5py
import numpy as np
import pandas as pd

from .load import SweepError, SweepWarning, _attr, _one_line, _settings_diff, _strings, read_manifest
from .load import _identity_problem as _unit_identity_problem

EVALUATION_FORMAT = "tinysql-eap evaluation v1"
_NAME = re.compile(r"^b(\d{5,})\.h5$")
_MAX_COUNT = 1 << 24  # prompts of a batch, circuits of a cell (io/evaluation_file.cpp)
_PER_CIRCUIT = ("circuit", "circuit_k", "edge_count", "faithfulness")
_PER_PROMPT = ("clean_logit_diff", "corrupt_logit_diff")

STATES = ("ok", "damaged", "foreign", "failed", "missing", "extra")
INVENTORY_COLUMNS = ["cell_id", "batch", "state", "path", "reason"]

# The cell's grid and the settings that change its circuits or their F (the manifest's; a manifest
# without method / input_node / logits_node, or an evaluation without prune: the files' attributes).
SETTINGS = ["cell_id", "model", "commandset", "hf_model", "feature", "use_novel_names", "use_synonyms_field",
            "use_synonyms_table", "num_fields", "batch_size", "n_batches", "seed", "dtype", "device",
            "downstream_heads", "metric_pairing", "method", "input_node", "logits_node", "top_n", "prune"]
_BOOLS = ("use_novel_names", "use_synonyms_field", "use_synonyms_table", "input_node", "logits_node", "prune")
_FROM_FILE = ("method", "input_node", "logits_node", "top_n", "prune", "metric_pairing", "downstream_heads")

EVALUATION_COLUMNS = SETTINGS + ["batch", "circuit", "k", "edges", "F", "baseline_clean_ld", "baseline_corrupt_ld",
                                 "complete", "no_faithfulness"]
PROMPT_COLUMNS = EVALUATION_COLUMNS[:-2] + ["prompt", "ld", "clean_ld", "corrupt_ld", "complete", "no_faithfulness"]
CIRCUIT_COLUMNS = SETTINGS + ["circuit", "k", "edges", "F", "spread", "per_batch", "batches", "complete",
                              "no_faithfulness"]
CELL_COLUMNS = SETTINGS + ["batches", "complete", "consistent_F", "consistent_spread", "consistent_edges", "empty_F",
                           "full_F", "auc_log_k", "curve_k", "curve_F", "no_faithfulness"]


def evaluation_path(out: str, cell: str, batch: int) -> str:
    """OUT/evaluation/<cell>/bNNNNN.h5, the name ``tinysql-eap run`` writes."""
    return os.path.join(out, "evaluation", cell, f"b{batch:05d}.h5")


def failure_path(out: str, cell: str, batch: int) -> str:
    """OUT/failed/<cell>.evaluate.bNNNNN.txt: an evaluation unit that failed."""
    return os.path.join(out, "failed", f"{cell}.evaluate.b{batch:05d}.txt")


def evaluation_files(out: str, cells: Optional[Iterable[str]] = None) -> List[tuple]:
    """(cell id, batch index, path) of every evaluation file on disk, sorted, unchecked."""
    root = os.path.join(out, "evaluation")
    wanted = set(cells) if cells is not None else None
    found = []
    if not os.path.isdir(root):
        return found
    for cell in sorted(os.listdir(root)):
        d = os.path.join(root, cell)
        if (wanted is not None and cell not in wanted) or not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            m = _NAME.match(name)
            if m:
                found.append((cell, int(m.group(1)), os.path.join(d, name)))
    return found


def _dataset(f, path: str, name: str, shape: tuple):
    if name not in f:
        raise SweepError(f"{path}: dataset '{name}' is missing")
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise SweepError(f"{path}: '{name}' is not a dataset")
    if tuple(ds.shape) != shape:
        raise SweepError(f"{path}: dataset '{name}' has shape {list(ds.shape)}, expected {list(shape)}")
    # Every value is read: a file cut short fails here, not later.
    return _strings(ds) if h5py.check_string_dtype(ds.dtype) is not None else ds[()]


def _count(attrs: dict, path: str, name: str) -> int:
    if name not in attrs:
        raise SweepError(f"{path}: attribute '{name}' is missing")
    v = attrs[name]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= int(v) <= _MAX_COUNT:
        raise SweepError(f"{path}: attribute '{name}' is {v!r}, not a count")
    return int(v)


def _read_evaluation(path: str) -> dict:
    with h5py.File(path, "r") as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if attrs.get("format") != EVALUATION_FORMAT:
            raise SweepError(f"{path}: not a tinysql-eap evaluation file (format attribute {attrs.get('format')!r})")
        B, C = _count(attrs, path, "n_prompts"), _count(attrs, path, "n_circuits")
        d = {name: _dataset(f, path, name, (C,)) for name in _PER_CIRCUIT}
        d.update({name: _dataset(f, path, name, (B,)) for name in _PER_PROMPT})
        d["logit_diff"] = _dataset(f, path, "logit_diff", (C, B))
    for name in ("logit_diff",) + _PER_PROMPT:
        x = np.asarray(d[name], dtype=np.float64)
        if not np.isfinite(x).all():
            raise SweepError(f"{path}: a logit difference is not finite ({x[~np.isfinite(x)].flat[0]})")
        d[name] = x
    d["circuit"] = [str(c) for c in d["circuit"]]
    d["circuit_k"] = np.asarray(d["circuit_k"], dtype=np.int64)
    d["edge_count"] = np.asarray(d["edge_count"], dtype=np.int64)
    d["faithfulness"] = np.asarray(d["faithfulness"], dtype=np.float64)
    return {"attrs": attrs, "data": d}


def read_evaluation(path: str) -> dict:
    """One evaluation file, read whole and checked as ``io::read_evaluation`` checks it (format,
    counts, every dataset's shape, finite logit differences): ``{"attrs": {...}, "data": {...}}``
    with ``circuit`` (list of str), ``circuit_k``, ``edge_count``, ``faithfulness`` [C],
    ``logit_diff`` [C, n_prompts], ``clean_logit_diff``, ``corrupt_logit_diff`` [n_prompts].

    A file that cannot be read whole raises ``SweepError`` with one line naming it."""
    try:
        return _read_evaluation(path)
    except SweepError:
        raise
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file") from None
    except Exception as e:  # h5py raises OSError, KeyError, ValueError, RuntimeError, TypeError...
        raise SweepError(f"{path}: cannot be read whole ({_one_line(e)})") from None


def _identity_problem(attrs: dict, cell: dict, batch: int) -> Optional[str]:
    """Why a readable evaluation file is not this cell's batch under the manifest's settings and
    [evaluate] table, or None: a unit file's checks (load.py), then the evaluation_hash."""
    for k in ("cell_id", "batch_index", "settings_hash", "evaluation_hash"):
        if k not in attrs:
            return f"attribute '{k}' is missing: cannot tell whose evaluation it is"
    why = _unit_identity_problem(attrs, cell, batch, "evaluation", "evaluates another sweep's scores")
    if why is not None:
        return why
    want = cell.get("evaluation_hash")
    if str(attrs["evaluation_hash"]) != want:
        return (f"evaluation_hash {attrs['evaluation_hash']}, not the manifest's {want}: another [evaluate] table"
                + _settings_diff(cell.get("evaluation", ""), attrs.get("evaluation", "")))
    return None


def _circuits(d: dict):
    return (tuple(d["circuit"]), tuple(int(k) for k in d["circuit_k"]), tuple(int(e) for e in d["edge_count"]))


def evaluated_cells(manifest: dict) -> List[dict]:
    """The manifest's cells that were evaluated (an ``evaluation_hash``: the job had [evaluate])."""
    return [c for c in manifest["cells"] if c.get("evaluation_hash")]


def _check_manifest(manifest: dict, out: str) -> None:
    for i, c in enumerate(manifest["cells"]):
        for k in ("evaluation_hash", "evaluation"):
            if k in c and not isinstance(c[k], str):
                raise SweepError(f"{os.path.join(out, 'sweep.json')}: cells[{i}].{k}: {c[k]!r} is not a string")


def _scan(out: str, cells: Optional[Iterable[str]] = None, keep: bool = False):
    """(manifest, inventory rows, {(cell, batch): evaluation} of the ok files when ``keep``)."""
    manifest = read_manifest(out)
    _check_manifest(manifest, out)
    wanted = set(cells) if cells is not None else None
    if wanted is not None:
        unknown = wanted - {c["id"] for c in manifest["cells"]}
        if unknown:
            raise SweepError(f"{os.path.join(out, 'sweep.json')}: no cell {sorted(unknown)[0]!r} "
                             f"({len(unknown)} of the cells asked for are not in the manifest)")
    rows, evals = [], {}
    for c in evaluated_cells(manifest):
        cid, n = c["id"], int(c["n_batches"])
        if wanted is not None and cid not in wanted:
            continue
        first = None  # (path, circuits, baselines) of the cell's first ok batch
        for b in range(n):
            path = evaluation_path(out, cid, b)
            if os.path.exists(path):
                try:
                    e = read_evaluation(path)
                except SweepError as err:
                    s = str(err)
                    rows.append((cid, b, "damaged", path, s[len(path) + 2:] if s.startswith(path + ": ") else s))
                    continue
                why = _identity_problem(e["attrs"], c, b)
                if why is None:
                    key = (_circuits(e["data"]), e["attrs"].get("baseline_clean_ld"),
                           e["attrs"].get("baseline_corrupt_ld"))
                    if first is None:
                        first = (path, key)
                    elif key[0] != first[1][0]:
                        why = f"its circuits (names, k or edge counts) differ from {first[0]}'s"
                    elif key[1:] != first[1][1:]:
                        why = f"its baselines (LD_clean, LD_corr) differ from {first[0]}'s"
                if why is not None:
                    rows.append((cid, b, "foreign", path, why))
                    continue
                rows.append((cid, b, "ok", path, ""))
                if keep:
                    e["path"] = path
                    evals[(cid, b)] = e
            elif os.path.exists(failure_path(out, cid, b)):
                fp = failure_path(out, cid, b)
                with open(fp, encoding="utf-8", errors="replace") as f:
                    rows.append((cid, b, "failed", fp, f.readline().strip() or "(no message)"))
            else:
                rows.append((cid, b, "missing", path, ""))
    by_id = {c["id"]: c for c in manifest["cells"]}
    for cid, b, path in evaluation_files(out, wanted):
        c = by_id.get(cid)
        if c is None:
            rows.append((cid, b, "extra", path, f"cell {cid} is not in sweep.json: not used"))
        elif not c.get("evaluation_hash"):
            rows.append((cid, b, "extra", path, f"the manifest's cell {cid} is not evaluated (no [evaluate] table in "
                                                "the job that wrote sweep.json): not used"))
        elif path != evaluation_path(out, cid, b):
            rows.append((cid, b, "extra", path, f"not the name of batch {b} (b{b:05d}.h5): not used"))
        elif b >= int(c["n_batches"]):
            rows.append((cid, b, "extra", path, f"beyond the manifest's n_batches {c['n_batches']}: not used"))
    return manifest, rows, evals


def inventory(out: str, cells: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per batch of every evaluated manifest cell (and per evaluation file the manifest
    does not account for): cell_id, batch, state (``STATES``), path (the evaluation file, or the
    failure note for ``failed``), reason (one line). Every evaluation file is read whole."""
    _, rows, _ = _scan(out, cells)
    return pd.DataFrame(rows, columns=INVENTORY_COLUMNS)


def problems(out: str, cells: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """The evaluation files on disk that are not used: damaged, foreign or extra."""
    inv = inventory(out, cells)
    return inv[inv["state"].isin(["damaged", "foreign", "extra"])].reset_index(drop=True)


def _counts(rows) -> str:
    n: Dict[str, int] = {}
    for r in rows:
        n[r[2]] = n.get(r[2], 0) + 1
    return ", ".join(f"{n[s]} {s}" for s in STATES if s in n) or "no evaluated batch in the manifest"


def _report(rows, strict: bool, what: str, stacklevel: int = 4) -> None:
    bad = [r for r in rows if r[2] in ("damaged", "foreign")]
    if not bad:
        return
    if strict:
        _, _, state, path, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise SweepError(f"{path}: {state} evaluation file: {reason}{more}")
    shown = "; ".join(f"{state} {path} ({reason})" for _, _, state, path, reason in bad[:5])
    more = f"; ... and {len(bad) - 5} more (evaluation.problems(out) lists them)" if len(bad) > 5 else ""
    warnings.warn(SweepWarning(f"{what}: {len(bad)} evaluation file(s) not used: {shown}{more}"),
                  stacklevel=stacklevel)


def _load(out: str, cells, strict: bool, what: str):
    manifest, rows, evals = _scan(out, cells, keep=True)
    _report(rows, strict, what)
    if not evals:
        if not evaluated_cells(manifest):
            why = "no cell of its manifest was evaluated (the job had no [evaluate] table)"
        else:
            why = _counts(rows)
        warnings.warn(SweepWarning(f"{what}: no usable evaluation file in {out} ({why})"), stacklevel=3)
    return manifest, rows, evals


def _settings(c: dict, attrs: dict) -> dict:
    s = {k: c.get(k) for k in SETTINGS}
    for k in _FROM_FILE:
        if s[k] is None:
            s[k] = attrs.get(k)
    s["cell_id"] = c["id"]
    s["n_batches"] = int(c["n_batches"])
    for k in _BOOLS:
        if s[k] is not None:
            s[k] = bool(s[k])
    return s


def _complete(manifest: dict, evals: dict) -> Dict[str, bool]:
    return {c["id"]: all((c["id"], b) in evals for b in range(int(c["n_batches"]))) for c in evaluated_cells(manifest)}


def _table(manifest: dict, evals: dict, prompts: bool = False) -> pd.DataFrame:
    by_id = {c["id"]: c for c in manifest["cells"]}
    complete = _complete(manifest, evals)
    frames = []
    for (cid, b), e in sorted(evals.items()):
        a, d = e["attrs"], e["data"]
        C = len(d["circuit"])
        k = pd.array([int(x) if x > 0 else None for x in d["circuit_k"]], dtype="Int64")
        cols = {"batch": b, "circuit": d["circuit"], "k": k, "edges": d["edge_count"].astype(np.int64),
                "F": d["faithfulness"]}
        if prompts:
            B = int(a["n_prompts"])
            cols = {key: (np.repeat(np.asarray(v), B) if not np.isscalar(v) else v) for key, v in cols.items()}
            cols["k"] = pd.array(np.repeat(k.to_numpy(dtype=object, na_value=None), B), dtype="Int64")
            cols.update(prompt=np.tile(np.arange(B, dtype=np.int64), C), ld=d["logit_diff"].reshape(-1),
                        clean_ld=np.tile(d["clean_logit_diff"], C), corrupt_ld=np.tile(d["corrupt_logit_diff"], C))
        frame = pd.DataFrame(cols)
        for key, v in _settings(by_id[cid], a).items():
            frame[key] = v
        frame["baseline_clean_ld"] = float(a.get("baseline_clean_ld", np.nan))
        frame["baseline_corrupt_ld"] = float(a.get("baseline_corrupt_ld", np.nan))
        frame["complete"] = complete[cid]
        frame["no_faithfulness"] = str(a.get("no_faithfulness", ""))
        frames.append(frame)
    columns = PROMPT_COLUMNS if prompts else EVALUATION_COLUMNS
    if not frames:
        return pd.DataFrame(columns=columns)
    df = pd.concat(frames, ignore_index=True)
    for key in ("cell_id", "feature", "circuit"):
        df[key] = df[key].astype("category")
    return df[columns]


def load_evaluations(out: str, cells: Optional[Iterable[str]] = None, complete_only: bool = False,
                     prompts: bool = False, strict: bool = False) -> pd.DataFrame:
    """One row per (evaluated cell, usable batch, circuit).

    Columns: the cell's settings (``SETTINGS``: grid, settings, ``method``, ``input_node`` /
    ``logits_node`` (the nodes scored), ``top_n`` (that made the consistent circuit), ``prune``),
    ``batch``, ``circuit`` (``consistent``, ``top-10``, ``empty``, ``full``), ``k`` (a top-k
    circuit's k, capped at the number of edges; <NA> for the others), ``edges`` (edges of the
    scoring graph in the circuit), ``F`` (the batch's faithfulness: mean over its prompts of
    (LD_i - LD_corr) / (LD_clean - LD_corr) with the cell's baselines; NaN for a degenerate cell),
    ``baseline_clean_ld`` / ``baseline_corrupt_ld`` (the cell's LD_clean, LD_corr), ``complete``
    (every batch 0 .. n_batches - 1 of the manifest has a usable evaluation file),
    ``no_faithfulness`` (why F is missing, "" when it is not).

    ``prompts=True``: one row per prompt instead, with ``prompt`` (its index in the batch), ``ld``
    (its logit difference with the circuit run), ``clean_ld`` and ``corrupt_ld`` (the clean and
    corrupt runs'). ``complete_only=True`` keeps the cells whose evaluation is complete.

    Damaged and foreign evaluation files are left out with a ``SweepWarning`` naming them
    (``strict=True``: ``SweepError``); an empty table comes with a ``SweepWarning`` saying why."""
    manifest, _, evals = _load(out, cells, strict, "load_evaluations")
    if complete_only:
        complete = _complete(manifest, evals)
        if evals and not any(complete.values()):
            warnings.warn(SweepWarning(f"load_evaluations(complete_only=True): no cell of {out} has every batch "
                                       "evaluated"), stacklevel=2)
        evals = {key: e for key, e in evals.items() if complete[key[0]]}
    return _table(manifest, evals, prompts)


def log_k_auc(k: Sequence[float], f: Sequence[float]) -> float:
    """Area under F(k) over log k, normalised by the log-k range (the trapezoid rule), as
    ``eap::log_k_auc``: ``k`` ascending and positive; one point's area is its F; NaN when empty."""
    k, f = list(k), list(f)
    if not k or len(k) != len(f):
        return float("nan")
    if len(k) == 1:
        return float(f[0])
    area = 0.0
    for i in range(1, len(k)):
        area += 0.5 * (f[i] + f[i - 1]) * (math.log(k[i]) - math.log(k[i - 1]))
    span = math.log(k[-1]) - math.log(k[0])
    return area / span if span > 0 else float(f[-1])


def _mean_spread(x: List[float]):
    """Mean and sample standard deviation (n - 1; 0 for one value), summed as faithfulness.cpp."""
    n = len(x)
    s = 0.0
    for v in x:
        s += v
    mean = s / n
    ss = 0.0
    for v in x:
        ss += (v - mean) * (v - mean)
    return mean, (math.sqrt(ss / (n - 1)) if n > 1 else 0.0)


def _evaluations_table(source, cells, complete_only: bool, strict: bool, what: str) -> pd.DataFrame:
    if isinstance(source, (str, os.PathLike)):
        manifest, _, evals = _load(str(source), cells, strict, what)
        df = _table(manifest, evals)
    else:
        df = source
        if "prompt" in df.columns:
            raise ValueError(f"{what}: give the per-circuit table (load_evaluations without prompts=True)")
        if cells is not None:
            df = df[df["cell_id"].isin(set(cells))]
    if complete_only:
        df = df[df["complete"].astype(bool)]
    return df


def _circuit_rows(df: pd.DataFrame) -> List[dict]:
    rows = []
    for cid, g in df.sort_values(["cell_id", "batch"], kind="stable").groupby("cell_id", sort=False, observed=True):
        first = g.iloc[0]
        settings = {k: first[k] for k in SETTINGS}
        order = list(dict.fromkeys(g["circuit"]))  # the evaluation's order (batch by batch, as written)
        for name in order:
            c = g[g["circuit"] == name]
            per_batch = [float(x) for x in c["F"]]
            mean, spread = _mean_spread(per_batch)
            k = c["k"].iloc[0]
            rows.append({**settings, "circuit": name, "k": None if pd.isna(k) else int(k),
                         "edges": int(c["edges"].iloc[0]), "F": mean, "spread": spread, "per_batch": per_batch,
                         "batches": len(per_batch), "complete": bool(first["complete"]),
                         "no_faithfulness": first["no_faithfulness"]})
    return rows


def circuit_summary(source, cells: Optional[Iterable[str]] = None, complete_only: bool = True,
                    strict: bool = False) -> pd.DataFrame:
    """One row per (cell, circuit), in the evaluation's order: the cell's settings, ``circuit``,
    ``k`` (<NA> except for top-k), ``edges``, ``F`` (mean over the batches), ``spread`` (sample
    standard deviation over the batches, n - 1; 0 for one batch), ``per_batch`` (list of each
    batch's F), ``batches`` (how many), ``complete``, ``no_faithfulness``. As ``eap::cell_faithfulness``
    computes them for the cell's JSON.

    ``source``: the sweep folder, or a ``load_evaluations`` table (without ``prompts``). Only cells
    whose evaluation is complete by default (``complete_only=False``: every cell with a usable
    batch; their F is provisional)."""
    df = _evaluations_table(source, cells, complete_only, strict, "circuit_summary")
    out = pd.DataFrame(_circuit_rows(df), columns=CIRCUIT_COLUMNS)
    out["k"] = out["k"].astype("Int64")
    return out


def _cell_rows(circuits: pd.DataFrame) -> List[dict]:
    rows = []
    for cid, g in circuits.groupby("cell_id", sort=False, observed=True):
        first = g.iloc[0]
        by = {r.circuit: r for r in g.itertuples(index=False)}
        top = g[g["k"].notna()]
        ks = [float(k) for k in top["k"]]
        fs = [float(f) for f in top["F"]]

        def get(name, col):
            r = by.get(name)
            return float("nan") if r is None else getattr(r, col)

        rows.append({**{k: first[k] for k in SETTINGS}, "batches": int(first["batches"]),
                     "complete": bool(first["complete"]), "consistent_F": get("consistent", "F"),
                     "consistent_spread": get("consistent", "spread"),
                     "consistent_edges": by["consistent"].edges if "consistent" in by else None,
                     "empty_F": get("empty", "F"), "full_F": get("full", "F"),
                     "auc_log_k": log_k_auc(ks, fs) if ks else float("nan"),
                     "curve_k": [int(k) for k in ks], "curve_F": fs, "no_faithfulness": first["no_faithfulness"]})
    return rows


def cell_faithfulness(source, cells: Optional[Iterable[str]] = None, complete_only: bool = True,
                      strict: bool = False) -> pd.DataFrame:
    """One row per evaluated cell: its settings, ``batches`` (evaluated), ``complete``,
    ``consistent_F`` / ``consistent_spread`` / ``consistent_edges`` (the cell's consistent circuit),
    ``empty_F``, ``full_F`` (the baselines: ``full_F`` is 1 up to float error; ``empty_F`` is 0 only
    when both input and logits nodes were scored), ``auc_log_k`` (area under F(k) over log k,
    normalised to the log-k range: ``log_k_auc``), ``curve_k`` / ``curve_F`` (lists: the top-k
    circuits, k ascending), ``no_faithfulness``. NaN / None where the job did not evaluate that
    circuit, and F NaN for a degenerate cell.

    ``source``: the sweep folder, a ``load_evaluations`` table or a ``circuit_summary`` table.
    Only complete cells by default, as for ``circuit_summary``."""
    if isinstance(source, pd.DataFrame) and "spread" in source.columns:
        circuits = source if cells is None else source[source["cell_id"].isin(set(cells))]
        if complete_only:
            circuits = circuits[circuits["complete"].astype(bool)]
    else:
        circuits = circuit_summary(source, cells, complete_only, strict)
    df = pd.DataFrame(_cell_rows(circuits), columns=CELL_COLUMNS)
    df["consistent_edges"] = df["consistent_edges"].astype("Int64")
    return df


def _number(x):
    return None if x is None or not math.isfinite(float(x)) else float(x)


def faithfulness_object(source, cell: str, strict: bool = False) -> dict:
    """The cell's ``faithfulness`` object as ``report::faithfulness_json`` writes it into the cell's
    JSON (docs/outputs.md), from its evaluation files: scored_nodes, never_ablated, pruned, top_n,
    batches, n_batches, no_faithfulness (only when F is missing), circuits (name -> F, spread,
    edges, k (top-k only), per_batch), curve ([{k, F}]), auc_log_k. Unrounded; NaN as None.

    ``source``: the sweep folder, a ``load_evaluations`` table or a ``circuit_summary`` table."""
    if isinstance(source, pd.DataFrame) and "spread" in source.columns:
        circuits = source[source["cell_id"] == cell]
    else:
        circuits = circuit_summary(source, [cell], complete_only=False, strict=strict)
        circuits = circuits[circuits["cell_id"] == cell]
    if circuits.empty:
        raise SweepError(f"{cell}: no usable evaluation file")
    first = circuits.iloc[0]
    inp, lo = bool(first["input_node"]), bool(first["logits_node"])
    heads = first.get("downstream_heads", "qkv") != "none"
    never = ([] if inp else ["edges from input"]) + ([] if heads else ["edges into head q/k/v inputs"]) + \
        ([] if lo else ["edges into logits"])
    j = {"scored_nodes": {"input": inp, "logits": lo},
         "never_ablated": (", ".join(never[:-1]) + " and " + never[-1] if len(never) > 1 else
                           never[0] if never else "nothing: every edge was scored"),
         "pruned": bool(first["prune"]), "top_n": int(first["top_n"]), "batches": int(first["batches"]),
         "n_batches": int(first["n_batches"])}
    if first["no_faithfulness"]:
        j["no_faithfulness"] = first["no_faithfulness"]
    cs, curve, ks, fs = {}, [], [], []
    for r in circuits.itertuples(index=False):
        o = {"F": _number(r.F), "spread": _number(r.spread), "edges": int(r.edges)}
        if not pd.isna(r.k):
            o["k"] = int(r.k)
            curve.append({"k": int(r.k), "F": _number(r.F)})
            ks.append(float(r.k))
            fs.append(float(r.F))
        o["per_batch"] = [_number(x) for x in r.per_batch]
        cs[r.circuit] = o
    j["circuits"] = cs
    j["curve"] = curve
    j["auc_log_k"] = _number(log_k_auc(ks, fs))
    return j
