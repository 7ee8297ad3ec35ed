"""A sweep folder's per-batch HDF5 files as pandas tables.

Layout (written by ``tinysql-eap run``)::

    OUT/sweep.json                    manifest: {"version", "job", "cells": [{"id", ...settings}]}
    OUT/units/<cell id>/b00000.h5     one per batch: raw scores [n_up, n_down] float32, valid mask,
                                      node names, per-prompt logit differences, token ids, words,
                                      the cell's settings as root attributes
    OUT/failed/<cell id>.b00000.txt   a batch that failed (one line: the error)

``load_sweep(out)`` gives one row per (cell, batch, valid edge) with the cell's settings, the raw
score and the score normalised by the cell's baselines (LD_clean, LD_corr: means of the per-prompt
logit differences over every prompt of every batch of the cell present on disk).
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Iterable, List, Optional

import h5py
import numpy as np
import pandas as pd

UNIT_FORMAT = "tinysql-eap unit v1"

# Root attributes that describe the cell (same for every batch of a cell).
SETTINGS = [
    "cell_id", "model", "commandset", "hf_model", "feature", "use_novel_names", "use_synonyms_field",
    "use_synonyms_table", "num_fields", "batch_size", "n_batches", "seed", "dtype", "device",
    "downstream_heads", "metric_pairing", "n_layers", "n_heads",
]
_FLAGS = ("use_novel_names", "use_synonyms_field", "use_synonyms_table")
_UNIT_NAME = re.compile(r"^b(\d{5,})\.h5$")


def display_name(node: str) -> str:
    """``head.1.3.q`` -> ``l1.h3.q``, ``mlp.0`` -> ``l0.mlp`` (the notebook's rename_edge)."""
    if node.startswith("mlp."):
        return f"l{node.split('.')[1]}.mlp"
    if node.startswith("head."):
        parts = node.split(".")
        comp = parts[3] if len(parts) > 3 else ""
        return f"l{parts[1]}.h{parts[2]}" + (f".{comp}" if comp else "")
    return node


def read_manifest(out: str) -> dict:
    path = os.path.join(out, "sweep.json")
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cells"), list):
        raise ValueError(f"{path}: not a sweep manifest (no 'cells' list)")
    return manifest


def unit_files(out: str, cells: Optional[Iterable[str]] = None) -> List[tuple]:
    """(cell id, batch index, path) of every unit file, sorted by cell id then batch."""
    root = os.path.join(out, "units")
    wanted = set(cells) if cells is not None else None
    found = []
    if not os.path.isdir(root):
        return found
    for cell in sorted(os.listdir(root)):
        if wanted is not None and cell not in wanted:
            continue
        d = os.path.join(root, cell)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            m = _UNIT_NAME.match(name)
            if m:
                found.append((cell, int(m.group(1)), os.path.join(d, name)))
    return found


def _attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_unit(path: str) -> dict:
    """One unit file: its attributes and datasets (numpy arrays; strings as str)."""
    with h5py.File(path, "r") as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if attrs.get("format") != UNIT_FORMAT:
            raise ValueError(f"{path}: not a tinysql-eap unit file (format {attrs.get('format')!r})")
        d = {}
        for name, ds in f.items():
            if h5py.check_string_dtype(ds.dtype) is not None:
                d[name] = [s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]]
            else:
                d[name] = ds[()]
    return {"attrs": attrs, "data": d}


def _settings(attrs: dict) -> dict:
    s = {k: attrs.get(k) for k in SETTINGS}
    for k in _FLAGS:
        if s[k] is not None:
            s[k] = bool(s[k])
    return s


def load_units(out: str, cells: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per unit file: the cell's settings, batch, prompt and position counts, the batch's
    mean clean / corrupt logit difference, clean accuracy, seconds, and the per-prompt logit
    differences (lists) for recomputing baselines."""
    rows = []
    for cell, batch, path in unit_files(out, cells):
        u = read_unit(path)
        a, d = u["attrs"], u["data"]
        s = _settings(a)
        s["cell_id"] = s["cell_id"] or cell
        n = int(a.get("n_prompts", len(d["clean_logit_diff"])))
        rows.append({
            **s, "batch": batch, "path": path, "n_prompts": n, "n_positions": int(a.get("n_positions", 0)),
            "clean_correct": int(a.get("clean_correct", 0)), "seconds": a.get("seconds"),
            "clean_ld": [float(x) for x in d["clean_logit_diff"]],
            "corrupt_ld": [float(x) for x in d["corrupt_logit_diff"]],
        })
    return pd.DataFrame(rows)


def degenerate(clean_ld: float, corrupt_ld: float) -> bool:
    """LD_clean == LD_corr (relative 1e-9), as the C++ reducer decides: no normalised score."""
    if not (np.isfinite(clean_ld) and np.isfinite(corrupt_ld)):
        return True
    scale = max(1.0, abs(clean_ld), abs(corrupt_ld))
    return abs(clean_ld - corrupt_ld) <= 1e-9 * scale


def baselines(units: pd.DataFrame) -> pd.DataFrame:
    """Per cell: LD_clean and LD_corr over all prompts of its batches (summed in batch order, as
    the reducer does), prompts, batches present, whether all batches are there, clean accuracy."""
    rows = []
    for cell, g in units.sort_values(["cell_id", "batch"]).groupby("cell_id", sort=False):
        c = r = 0.0
        n = correct = 0
        for clean, corrupt, k in zip(g["clean_ld"], g["corrupt_ld"], g["clean_correct"]):
            for x in clean:
                c += x
            for x in corrupt:
                r += x
            n += len(clean)
            correct += k
        lc, lr = (c / n, r / n) if n else (float("nan"), float("nan"))
        n_batches = g["n_batches"].iloc[0]
        rows.append({
            "cell_id": cell, "clean_ld": lc, "corrupt_ld": lr, "n_prompts": n, "batches_present": len(g),
            "n_batches": n_batches, "complete": n_batches is not None and len(g) == int(n_batches),
            "clean_accuracy": correct / n if n else float("nan"), "degenerate": degenerate(lc, lr),
        })
    return pd.DataFrame(rows)


def load_sweep(out: str, cells: Optional[Iterable[str]] = None, complete_only: bool = False) -> pd.DataFrame:
    """The tidy table: one row per (cell, batch, valid edge).

    Columns: the cell's settings (``SETTINGS``), ``batch``, ``upstream`` / ``downstream`` (node
    names as in the file, e.g. ``head.0.3``, ``mlp.1``), ``from_edge`` / ``to_edge`` (the notebook's
    names, e.g. ``l0.h3``), ``up_index`` / ``down_index`` (graph indices, the ranking's tie
    order), ``score`` (raw, float32 as stored), ``norm_score`` (score x 1 / (LD_clean - LD_corr),
    NaN for a degenerate cell), ``complete`` (all the cell's batches are present).
    """
    units = load_units(out, cells)
    if units.empty:
        return pd.DataFrame(columns=SETTINGS + ["batch", "upstream", "downstream", "from_edge", "to_edge",
                                                "up_index", "down_index", "score", "norm_score", "complete"])
    base = baselines(units).set_index("cell_id")
    frames = []
    for row in units.itertuples(index=False):
        b = base.loc[row.cell_id]
        if complete_only and not b["complete"]:
            continue
        d = read_unit(row.path)["data"]
        scores = np.asarray(d["scores"], dtype=np.float32)
        valid = np.asarray(d["valid"]).astype(bool)
        ui, di = np.nonzero(valid)
        up = np.asarray(d["upstream"], dtype=object)
        down = np.asarray(d["downstream"], dtype=object)
        raw = scores[ui, di]
        scale = np.nan if b["degenerate"] else 1.0 / (b["clean_ld"] - b["corrupt_ld"])
        frame = pd.DataFrame({
            "batch": row.batch,
            "upstream": up[ui], "downstream": down[di],
            "up_index": ui.astype(np.int32), "down_index": di.astype(np.int32),
            "score": raw,
            # As the reducer: the float32 score promoted to double, times the double scale.
            "norm_score": raw.astype(np.float64) * scale,
        })
        for k in SETTINGS:
            frame[k] = getattr(row, k)
        frame["complete"] = bool(b["complete"])
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    names = {n: display_name(n) for n in pd.unique(pd.concat([df["upstream"], df["downstream"]]))}
    df["from_edge"] = df["upstream"].map(names)
    df["to_edge"] = df["downstream"].map(names)
    for k in ("upstream", "downstream", "from_edge", "to_edge", "cell_id", "feature"):
        df[k] = df[k].astype("category")
    cols = SETTINGS + ["batch", "upstream", "downstream", "from_edge", "to_edge", "up_index", "down_index", "score",
                       "norm_score", "complete"]
    return df[cols]


def failures(out: str) -> pd.DataFrame:
    """The failed batches: cell id, batch, message."""
    root = os.path.join(out, "failed")
    rows = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            m = re.match(r"^(.*)\.b(\d{5,})\.txt$", name)
            if m:
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                    rows.append({"cell_id": m.group(1), "batch": int(m.group(2)), "message": f.readline().strip()})
    return pd.DataFrame(rows, columns=["cell_id", "batch", "message"])


def cell_status(out: str) -> Dict[str, str]:
    """done / partial / missing / failed per manifest cell, from the files on disk."""
    manifest = read_manifest(out)
    have = {}
    for cell, batch, _ in unit_files(out):
        have.setdefault(cell, set()).add(batch)
    failed = failures(out)
    status = {}
    for c in manifest["cells"]:
        cid, n = c["id"], int(c["n_batches"])
        present = {b for b in have.get(cid, set()) if b < n}
        f = {b for b in failed[failed["cell_id"] == cid]["batch"] if b not in present}
        status[cid] = "failed" if f else "done" if len(present) == n else "partial" if present else "missing"
    return status
