"""A sweep folder's per-batch HDF5 files as pandas tables.

Layout (written by ``tinysql-eap run``)::

    OUT/sweep.json                    manifest: {"version", "job", "cells": [{"id", "n_batches",
                                      "settings_hash", ...settings}]}
    OUT/units/<cell id>/b00000.h5     one per batch: raw scores [n_up, n_down] float32, valid mask,
                                      node names, per-prompt logit differences, token ids, words,
                                      the cell's settings as root attributes
    OUT/failed/<cell id>.b00000.txt   a batch that failed (one line: the error)

The manifest is the authority: a cell has the batches ``0 .. n_batches - 1`` of its manifest entry
(a job may be rerun with more batches; the files written earlier carry the old count). Every unit
file is read whole and checked against the manifest before it is used (``inventory``):

- ``ok``: read whole, its ``cell_id``, ``batch_index`` and ``settings_hash`` are the manifest's;
- ``damaged``: cannot be read whole (truncated, not HDF5, a dataset or attribute missing or of the
  wrong size); not used;
- ``foreign``: readable, but another cell's or batch's, or written with other settings (another
  seed, model, ...: its ``settings_hash`` differs from the manifest's); not used;
- ``failed`` / ``missing``: no unit file (with / without ``failed/<cell>.bNNNNN.txt``);
- ``extra``: a unit file beyond the manifest's ``n_batches`` or of a cell the manifest does not
  list; not used (``reduce`` ignores them too).

Damaged and foreign files are never used silently: the loaders leave them out and warn
(``SweepWarning``, naming every file), or raise ``SweepError`` with ``strict=True``. A cell is
complete ("done") when every one of its manifest batches is ``ok``.

``load_sweep(out)`` gives one row per (cell, batch, valid edge) with the cell's settings, the raw
score and the score normalised by the cell's baselines (LD_clean, LD_corr: means of the per-prompt
logit differences over every prompt of every usable batch of the cell).

``cell_quality(out)`` gives per cell what ``reduce`` writes as ``parameters.quality`` (effect,
spreads, clean accuracy, top-answer flips, the flags degenerate / low_effect / low_accuracy under
the manifest's thresholds or keyword overrides), computed as src/eap/quality.cpp computes it.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from typing import Dict, Iterable, List, Optional, Tuple

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
# Settings only the unit files know (the graph's size).
_UNIT_ONLY = ("n_layers", "n_heads")
_FLAGS = ("use_novel_names", "use_synonyms_field", "use_synonyms_table")
_UNIT_NAME = re.compile(r"^b(\d{5,})\.h5$")

# What a unit file must hold to be read whole (as io::read_unit, src/io/unit_file.cpp).
_REQUIRED_ATTRS = ("n_prompts", "n_positions", "clean_correct")
_IDENTITY_ATTRS = ("cell_id", "batch_index")
_KEPT = ("scores", "valid", "upstream", "downstream", "clean_logit_diff", "corrupt_logit_diff", "clean_top_token",
         "corrupt_top_token")
# What the quality of a cell needs (cell_quality, cell_summary): no scores.
_KEPT_QUALITY = ("clean_logit_diff", "corrupt_logit_diff", "clean_top_token", "corrupt_top_token")
# Optional datasets: each run's top token at the last position, [n_prompts]; absent in files written
# before they were recorded. io::read_unit reads both when clean_top_token exists.
_TOP_TOKENS = ("clean_top_token", "corrupt_top_token")

STATES = ("ok", "damaged", "foreign", "failed", "missing", "extra")
CELL_STATUSES = ("done", "partial", "missing", "failed", "damaged", "foreign")
INVENTORY_COLUMNS = ["cell_id", "batch", "state", "path", "reason"]


class SweepError(ValueError):
    """A sweep folder or unit file that cannot be used; the message is one line naming the file."""


class SweepWarning(UserWarning):
    """Unit files left out (damaged, foreign) or cells skipped; the message names them."""


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
    """OUT/sweep.json, checked: a ``cells`` list whose entries have an ``id`` and ``n_batches``."""
    path = os.path.join(out, "sweep.json")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file (not a sweep folder, or `tinysql-eap run` has not started)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SweepError(f"{path}: not a sweep manifest ({_one_line(e)})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cells"), list):
        raise SweepError(f"{path}: not a sweep manifest (no 'cells' list)")
    seen = set()
    for i, c in enumerate(manifest["cells"]):
        where = f"{path}: cells[{i}]"
        if not isinstance(c, dict):
            raise SweepError(f"{where}: not an object")
        cid = c.get("id")
        if not isinstance(cid, str) or not cid or "/" in cid or cid.startswith("."):
            raise SweepError(f"{where}.id: {cid!r} is not a cell id")
        if cid in seen:
            raise SweepError(f"{where}.id: {cid!r} is listed twice")
        seen.add(cid)
        n = c.get("n_batches")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise SweepError(f"{where}.n_batches: {n!r} is not a batch count")
        h = c.get("settings_hash")
        if h is not None and not isinstance(h, str):
            raise SweepError(f"{where}.settings_hash: {h!r} is not a string")
    return manifest


def unit_path(out: str, cell: str, batch: int) -> str:
    """OUT/units/<cell>/bNNNNN.h5, the name ``tinysql-eap run`` writes and ``reduce`` reads."""
    return os.path.join(out, "units", cell, f"b{batch:05d}.h5")


def failure_path(out: str, cell: str, batch: int) -> str:
    return os.path.join(out, "failed", f"{cell}.b{batch:05d}.txt")


def unit_files(out: str, cells: Optional[Iterable[str]] = None) -> List[tuple]:
    """(cell id, batch index, path) of every unit file on disk, sorted by cell id then batch, as
    found: not checked against the manifest (``inventory`` does that)."""
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


def _one_line(e: BaseException) -> str:
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else (s or type(e).__name__)


def _attr(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray) and v.shape == ():
        return v.item()
    return v


def _strings(ds) -> list:
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()]]


def _read_unit(path: str) -> dict:
    """read_unit's body; h5py's own exceptions escape (read_unit turns them into SweepError)."""
    with h5py.File(path, "r") as f:
        attrs = {k: _attr(v) for k, v in f.attrs.items()}
        if attrs.get("format") != UNIT_FORMAT:
            raise SweepError(f"{path}: not a tinysql-eap unit file (format attribute {attrs.get('format')!r})")
        for k in _REQUIRED_ATTRS:
            if k not in attrs:
                raise SweepError(f"{path}: attribute '{k}' is missing")
        if "scores" not in f:
            raise SweepError(f"{path}: dataset 'scores' is missing")
        shape = f["scores"].shape
        if len(shape) != 2:
            raise SweepError(f"{path}: dataset 'scores' is not two-dimensional")
        U, D = shape
        B, P = int(attrs["n_prompts"]), int(attrs["n_positions"])
        want = {"scores": U * D, "valid": U * D, "upstream": U, "downstream": D, "clean_logit_diff": B,
                "corrupt_logit_diff": B, "clean_input_ids": B * P, "corrupt_input_ids": B * P, "clean_token_id": B,
                "corrupt_token_id": B, "answer_token_id": B, "clean_word": B, "corrupt_word": B}
        if _TOP_TOKENS[0] in f:  # as io::read_unit: then both, of n_prompts values each
            want.update({name: B for name in _TOP_TOKENS})
        d = {}
        for name, n in want.items():
            if name not in f:
                raise SweepError(f"{path}: dataset '{name}' is missing")
            ds = f[name]
            if not isinstance(ds, h5py.Dataset):
                raise SweepError(f"{path}: '{name}' is not a dataset")
            if int(np.prod(ds.shape, dtype=np.int64)) != n:
                raise SweepError(f"{path}: dataset '{name}' has {int(np.prod(ds.shape, dtype=np.int64))} values, "
                                 f"expected {n}")
            # Every value is read: a file cut short fails here, not later.
            d[name] = _strings(ds) if h5py.check_string_dtype(ds.dtype) is not None else ds[()]
        for name, ds in f.items():  # anything else the file holds, as it is
            if name not in d and isinstance(ds, h5py.Dataset):
                d[name] = _strings(ds) if h5py.check_string_dtype(ds.dtype) is not None else ds[()]
    return {"attrs": attrs, "data": d}


def read_unit(path: str) -> dict:
    """One unit file, read whole: its attributes and datasets (numpy arrays; strings as str).

    A file that cannot be read whole (missing, truncated, not HDF5, not a unit file, a dataset or
    attribute missing or of the wrong size) raises ``SweepError`` with one line naming it."""
    try:
        return _read_unit(path)
    except SweepError:
        raise
    except FileNotFoundError:
        raise SweepError(f"{path}: no such file") from None
    except Exception as e:  # h5py raises OSError, KeyError, ValueError, RuntimeError, TypeError...
        raise SweepError(f"{path}: cannot be read whole ({_one_line(e)})") from None


def _split_settings(s) -> Dict[str, str]:
    out = {}
    for kv in str(s or "").split(";"):
        if "=" in kv:
            k, v = kv.split("=", 1)
            out[k] = v
    return out


def _settings_diff(want, got) -> str:
    """" (k 'got', not 'want'; ...)" for the settings that differ, "" when none can be named."""
    a, b = _split_settings(want), _split_settings(got)
    d = [f"{k} '{b.get(k, '')}', not '{a.get(k, '')}'" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return f" ({'; '.join(d)})" if d else ""


def _identity_problem(attrs: dict, cell: dict, batch: int, what: str = "unit",
                      another: str = "written by another sweep") -> Optional[str]:
    """Why a readable unit file (or evaluation file: `what`, `another`) is not this cell's batch
    under the manifest's settings, or None."""
    for k in _IDENTITY_ATTRS:
        if k not in attrs:
            return f"attribute '{k}' is missing: cannot tell whose {what} it is"
    if str(attrs["cell_id"]) != cell["id"]:
        return f"holds cell {attrs['cell_id']}, not {cell['id']}"
    try:
        bi = int(attrs["batch_index"])
    except (TypeError, ValueError):
        return f"attribute 'batch_index' is {attrs['batch_index']!r}, not a batch index"
    if bi != batch:
        return f"holds batch {bi}, not {batch}"
    want = cell.get("settings_hash")
    if want:  # a manifest without hashes (older versions) cannot be checked
        got = attrs.get("settings_hash")
        if got is None:
            return f"attribute 'settings_hash' is missing; the manifest's is {want}"
        if str(got) != want:
            return (f"settings_hash {got}, not the manifest's {want}: {another}"
                    + _settings_diff(cell.get("settings"), attrs.get("settings")))
    return None


def _graph(d: dict):
    return (list(d["upstream"]), list(d["downstream"]), np.asarray(d["valid"]).tobytes())


def _select(manifest: dict, cells, where: str) -> Optional[set]:
    """The ids of the manifest cells ``cells`` selects (None: every cell): an iterable of cell ids
    (each must be in the manifest), a dict {setting: value or list of values} (e.g. ``{"model": 2,
    "feature": ["EngTableName", "DefTableName"]}``, matched against the manifest's entries) or a
    callable taking a manifest cell entry (a dict) and returning True for the cells wanted."""
    if cells is None:
        return None
    if callable(cells):
        return {c["id"] for c in manifest["cells"] if cells(c)}
    if isinstance(cells, dict):
        known = set().union(*(set(c) for c in manifest["cells"])) | {"cell_id"} if manifest["cells"] else {"cell_id"}
        for k in cells:
            if k not in known:
                raise SweepError(f"{where}: cells filter: no setting {k!r} in the manifest's cells "
                                 f"(known: {', '.join(sorted(known))})")

        def match(c, k, v):
            have = c["id"] if k == "cell_id" else c.get(k)
            vs = list(v) if isinstance(v, (list, tuple, set, frozenset)) else [v]
            return any(have == x or str(have) == str(x) for x in vs)

        return {c["id"] for c in manifest["cells"] if all(match(c, k, v) for k, v in cells.items())}
    if isinstance(cells, str):
        cells = [cells]
    wanted = set(cells)
    unknown = wanted - {c["id"] for c in manifest["cells"]}
    if unknown:
        raise SweepError(f"{where}: no cell {sorted(unknown)[0]!r} "
                         f"({len(unknown)} of the cells asked for are not in the manifest)")
    return wanted


def _scan_cells(out: str, manifest: dict, wanted: Optional[set], keep=False):
    """Per manifest cell (of ``wanted``; None: all), in manifest order: (cell entry, its inventory
    rows, {batch: unit} of its ok files when ``keep``). One cell's units at a time are in memory."""
    for c in manifest["cells"]:
        cid, n = c["id"], int(c["n_batches"])
        if wanted is not None and cid not in wanted:
            continue
        rows, units = [], {}
        first = None  # (path, graph) of the cell's first ok batch
        for b in range(n):
            path = unit_path(out, cid, b)
            if os.path.exists(path):
                try:
                    u = read_unit(path)
                except SweepError as e:
                    rows.append((cid, b, "damaged", path, str(e)[len(path) + 2:] if str(e).startswith(path) else str(e)))
                    continue
                why = _identity_problem(u["attrs"], c, b)
                if why is None:
                    g = _graph(u["data"])
                    if first is None:
                        first = (path, g)
                    elif g != first[1]:
                        why = f"its graph (node names or edge mask) differs from {first[0]}'s"
                if why is not None:
                    rows.append((cid, b, "foreign", path, why))
                    continue
                rows.append((cid, b, "ok", path, ""))
                if keep:  # what the tables need; token ids and words stay on disk
                    names = _KEPT if keep is True else keep
                    u["data"] = {k: u["data"][k] for k in names if k in u["data"]}
                    u["path"] = path
                    units[b] = u
            elif os.path.exists(failure_path(out, cid, b)):
                fp = failure_path(out, cid, b)
                with open(fp, encoding="utf-8", errors="replace") as f:
                    rows.append((cid, b, "failed", fp, f.readline().strip() or "(no message)"))
            else:
                rows.append((cid, b, "missing", path, ""))
        yield c, rows, units


def _extra_rows(out: str, manifest: dict, wanted: Optional[set]) -> list:
    rows = []
    counts = {c["id"]: int(c["n_batches"]) for c in manifest["cells"]}
    for cid, b, path in unit_files(out, wanted):
        if cid not in counts:
            rows.append((cid, b, "extra", path, f"cell {cid} is not in sweep.json: not used"))
        elif path != unit_path(out, cid, b):
            rows.append((cid, b, "extra", path, f"not the name of batch {b} (b{b:05d}.h5): not used"))
        elif b >= counts[cid]:
            rows.append((cid, b, "extra", path, f"beyond the manifest's n_batches {counts[cid]}: not used"))
    return rows


def _scan(out: str, cells=None, keep=False):
    """(manifest, inventory rows, {(cell, batch): unit} of the ok files when ``keep``: True keeps
    ``_KEPT``, a tuple of dataset names keeps those). ``cells``: as ``_select``."""
    manifest = read_manifest(out)
    wanted = _select(manifest, cells, os.path.join(out, "sweep.json"))
    rows, units = [], {}
    for c, crows, cunits in _scan_cells(out, manifest, wanted, keep):
        rows += crows
        units.update({(c["id"], b): u for b, u in cunits.items()})
    rows += _extra_rows(out, manifest, wanted)
    return manifest, rows, units


def inventory(out: str, cells: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """One row per manifest batch (and per unit file the manifest does not account for): cell_id,
    batch, state (``STATES``: ok, damaged, foreign, failed, missing, extra), path (the unit file, or
    the failure note for ``failed``), reason (one line: why the file is not used, the failure's
    message). Every unit file is read whole."""
    _, rows, _ = _scan(out, cells)
    return pd.DataFrame(rows, columns=INVENTORY_COLUMNS)


def problems(out: str, cells: Optional[Iterable[str]] = None) -> pd.DataFrame:
    """The unit files on disk that are not used: ``inventory`` rows that are damaged, foreign or extra."""
    inv = inventory(out, cells)
    return inv[inv["state"].isin(["damaged", "foreign", "extra"])].reset_index(drop=True)


def _report(rows, strict: bool, what: str, stacklevel: int = 3) -> None:
    bad = [r for r in rows if r[2] in ("damaged", "foreign")]
    if not bad:
        return
    if strict:
        cid, b, state, path, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise SweepError(f"{path}: {state} unit file: {reason}{more}")
    shown = "; ".join(f"{state} {path} ({reason})" for _, _, state, path, reason in bad[:5])
    more = f"; ... and {len(bad) - 5} more (load.problems(out) lists them)" if len(bad) > 5 else ""
    warnings.warn(SweepWarning(f"{what}: {len(bad)} unit file(s) not used: {shown}{more}"), stacklevel=stacklevel)


def _cell_settings(c: dict, attrs: dict) -> dict:
    s = {k: (c[k] if k in c and k not in _UNIT_ONLY else attrs.get(k)) for k in SETTINGS}
    s["cell_id"] = c["id"]
    s["n_batches"] = int(c["n_batches"])
    for k in _FLAGS:
        if s[k] is not None:
            s[k] = bool(s[k])
    return s


_UNIT_COLUMNS = SETTINGS + ["batch", "path", "n_prompts", "n_positions", "clean_correct", "seconds", "clean_ld",
                            "corrupt_ld", "clean_top", "corrupt_top"]


def _units_table(manifest: dict, units: dict) -> pd.DataFrame:
    by_id = {c["id"]: c for c in manifest["cells"]}
    rows = []
    for (cid, b), u in sorted(units.items()):
        a, d = u["attrs"], u["data"]
        rows.append({
            **_cell_settings(by_id[cid], a), "batch": b, "path": u["path"], "n_prompts": int(a["n_prompts"]),
            "n_positions": int(a["n_positions"]), "clean_correct": int(a["clean_correct"]), "seconds": a.get("seconds"),
            "clean_ld": [float(x) for x in d["clean_logit_diff"]],
            "corrupt_ld": [float(x) for x in d["corrupt_logit_diff"]],
            # None when the file does not record top tokens (written before they were).
            "clean_top": [int(x) for x in d["clean_top_token"]] if "clean_top_token" in d else None,
            "corrupt_top": [int(x) for x in d["corrupt_top_token"]] if "clean_top_token" in d else None,
        })
    return pd.DataFrame(rows, columns=_UNIT_COLUMNS)


def _load(out: str, cells, strict: bool, what: str):
    manifest, rows, units = _scan(out, cells, keep=True)
    for (cid, b), u in units.items():
        u["path"] = unit_path(out, cid, b)
    _report(rows, strict, what, stacklevel=4)
    if not units:
        warnings.warn(SweepWarning(f"{what}: no usable unit file in {out} ({_counts(rows)})"), stacklevel=3)
    return manifest, rows, units


def _counts(rows) -> str:
    n = {}
    for r in rows:
        n[r[2]] = n.get(r[2], 0) + 1
    return ", ".join(f"{n[s]} {s}" for s in STATES if s in n) or "no batch in the manifest"


def load_units(out: str, cells: Optional[Iterable[str]] = None, strict: bool = False) -> pd.DataFrame:
    """One row per usable (``ok``) unit file of a manifest batch: the cell's settings (the
    manifest's; ``n_batches`` is the manifest's count, not the file's), batch, path, prompt and
    position counts, clean accuracy count, seconds, the per-prompt logit differences (lists)
    for recomputing baselines, and each run's top token per prompt (``clean_top``,
    ``corrupt_top``: lists, None in files written before they were recorded). Damaged and foreign files are left out with a ``SweepWarning``
    (``strict=True``: ``SweepError``)."""
    manifest, _, units = _load(out, cells, strict, "load_units")
    return _units_table(manifest, units)


def degenerate(clean_ld: float, corrupt_ld: float) -> bool:
    """LD_clean == LD_corr (relative 1e-9), as the C++ reducer decides: no normalised score."""
    if not (np.isfinite(clean_ld) and np.isfinite(corrupt_ld)):
        return True
    scale = max(1.0, abs(clean_ld), abs(corrupt_ld))
    return abs(clean_ld - corrupt_ld) <= 1e-9 * scale


def baselines(units: pd.DataFrame) -> pd.DataFrame:
    """Per cell: LD_clean and LD_corr over all prompts of its batches (summed in batch order, as
    the reducer does), prompts, batches present, the manifest's batch count, whether every batch
    0 .. n_batches - 1 is there, clean accuracy."""
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
        n_batches = int(g["n_batches"].iloc[0])
        complete = sorted(int(b) for b in g["batch"]) == list(range(n_batches))
        rows.append({
            "cell_id": cell, "clean_ld": lc, "corrupt_ld": lr, "n_prompts": n, "batches_present": len(g),
            "n_batches": n_batches, "complete": complete,
            "clean_accuracy": correct / n if n else float("nan"), "degenerate": degenerate(lc, lr),
        })
    return pd.DataFrame(rows, columns=["cell_id", "clean_ld", "corrupt_ld", "n_prompts", "batches_present", "n_batches",
                                       "complete", "clean_accuracy", "degenerate"])


# --- Cell quality (src/eap/quality.cpp) -------------------------------------------------------

QUALITY_DEFAULTS = {"min_effect_vs_clean": 0.05, "min_effect_vs_spread": 0.15, "min_accuracy": 0.5}
QUALITY_FLAGS = ("degenerate", "low_effect", "low_accuracy")
QUALITY_COLUMNS = ["cell_id", "complete", "n_prompts", "batches_present", "clean_ld", "corrupt_ld", "effect",
                   "effect_spread", "ld_spread", "clean_accuracy", "flip_fraction", "flags", "flagged", "reasons"]


def quality_thresholds(manifest, min_effect_vs_clean: Optional[float] = None,
                       min_effect_vs_spread: Optional[float] = None,
                       min_accuracy: Optional[float] = None) -> Dict[str, float]:
    """The thresholds of the quality flags, as ``reduce`` takes them: ``QUALITY_DEFAULTS``, then the
    manifest's ``quality`` object (the job's ``[quality]`` table; absent in older manifests), then
    the keyword arguments that are not None (``reduce --min-effect-vs-clean`` etc.). ``manifest``:
    the manifest (a dict) or the sweep folder."""
    if isinstance(manifest, str):
        where = os.path.join(manifest, "sweep.json")
        manifest = read_manifest(manifest)
    else:
        where = "sweep.json"
    t = dict(QUALITY_DEFAULTS)
    q = manifest.get("quality") if isinstance(manifest, dict) else None
    if q is not None:
        if not isinstance(q, dict):
            raise SweepError(f"{where}: quality: not an object")
        for k in QUALITY_DEFAULTS:
            if k in q:
                v = q[k]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise SweepError(f"{where}: quality.{k}: not a number")
                t[k] = float(v)
    for k, v in (("min_effect_vs_clean", min_effect_vs_clean), ("min_effect_vs_spread", min_effect_vs_spread),
                 ("min_accuracy", min_accuracy)):
        if v is not None:
            v = float(v)
            hi = 1.0 if k == "min_accuracy" else 1e9
            if not (0 <= v <= hi):
                raise ValueError(f"{k} = {v!r}: must be between 0 and {hi:g}")
            t[k] = v
    return t


def _sample_sd(x: List[float]) -> float:
    """Standard deviation with n - 1, 0 for fewer than two values; summed as quality.cpp sums."""
    n = len(x)
    if n < 2:
        return 0.0
    mean = 0.0
    for v in x:
        mean += v / n
    ss = 0.0
    for v in x:
        ss += (v - mean) * (v - mean)
    return math.sqrt(ss / (n - 1))


def _c_g(fmt: str, x: float) -> str:
    return fmt % x  # Python's %-formatting is C's printf for %g / %f


def assess_cell(batches: List[dict], thresholds: Optional[Dict[str, float]] = None) -> dict:
    """The quality of one cell from its batches, in batch order, as ``eap::assess_cell``: each batch
    a dict with ``clean_ld``, ``corrupt_ld`` (per-prompt lists), ``clean_correct``, ``n_prompts``
    and ``clean_top`` / ``corrupt_top`` (lists, or None when the file does not record them).

    Returns clean_ld, corrupt_ld (means over every prompt; for metric_pairing "notebook" too, as the
    C++ quality does), effect (clean_ld - corrupt_ld), effect_spread (standard deviation, n - 1,
    over batches of each batch's mean clean - mean corrupt LD; 0 for one batch), ld_spread (the
    same over every prompt of the clean LD), clean_accuracy, flip_fraction (share of prompts whose
    corrupt top token is not the clean one; NaN when a batch lacks top tokens), flags (list, in the
    order degenerate, low_effect, low_accuracy), reasons (one line per flag, the C++ text), flagged."""
    t = dict(QUALITY_DEFAULTS)
    t.update(thresholds or {})
    clean: List[float] = []
    batch_effects: List[float] = []
    c_sum = r_sum = 0.0
    correct = prompts = flips = with_tops = n_ld = 0
    for b in batches:
        bc = br = 0.0
        for v in b["clean_ld"]:
            v = float(v)
            clean.append(v)
            bc += v
            c_sum += v
        for v in b["corrupt_ld"]:
            v = float(v)
            br += v
            r_sum += v
        n = len(b["clean_ld"])
        n_ld += n
        if n:
            batch_effects.append((bc - br) / n)
        correct += int(b["clean_correct"])
        prompts += int(b["n_prompts"])
        ct, rt = b.get("clean_top"), b.get("corrupt_top")
        if ct is not None and rt is not None and len(ct) == n and len(rt) == n:
            flips += sum(int(x) != int(y) for x, y in zip(ct, rt))
            with_tops += n
    clean_ld, corrupt_ld = (c_sum / n_ld, r_sum / n_ld) if n_ld else (0.0, 0.0)
    q = {"clean_ld": clean_ld, "corrupt_ld": corrupt_ld, "effect": clean_ld - corrupt_ld,
         "effect_spread": _sample_sd(batch_effects), "ld_spread": _sample_sd(clean),
         "clean_accuracy": correct / prompts if prompts else 0.0,
         "flip_fraction": flips / prompts if (with_tops == prompts and prompts > 0) else float("nan")}
    flags, reasons = [], []
    e = abs(q["effect"])
    if degenerate(clean_ld, corrupt_ld):
        flags.append("degenerate")
        reasons.append("degenerate: LD_clean = %.9g, LD_corr = %.9g over %d prompts, so no normalised score exists"
                       % (clean_ld, corrupt_ld, n_ld))
    elif e < t["min_effect_vs_clean"] * abs(clean_ld) or e < t["min_effect_vs_spread"] * q["ld_spread"]:
        flags.append("low_effect")
        reasons.append("low_effect: |LD_clean - LD_corr| = %.4g is small against |LD_clean| = %.4g" % (e, abs(clean_ld))
                       + " and the spread of LD over prompts %.4g: the corruption barely moves the metric, and the "
                       "normalised scores divide by this small number" % q["ld_spread"])
    if q["clean_accuracy"] < t["min_accuracy"]:
        flags.append("low_accuracy")
        reasons.append("low_accuracy: the clean run's top answer is right for %.1f%% of prompts (threshold %.0f%%): "
                       "the model does not do this task" % (100 * q["clean_accuracy"], 100 * t["min_accuracy"]))
    q.update(flags=flags, reasons=reasons, flagged=bool(flags))
    return q


def _quality_rows(units: pd.DataFrame, thresholds: Dict[str, float]) -> Dict[str, dict]:
    """{cell: assess_cell of its usable batches (batch order) + n_prompts, batches_present, complete}."""
    found = {}
    if units.empty:
        return found
    for cell, g in units.sort_values(["cell_id", "batch"]).groupby("cell_id", sort=False):
        batches = [{"clean_ld": r.clean_ld, "corrupt_ld": r.corrupt_ld, "clean_correct": r.clean_correct,
                    "n_prompts": r.n_prompts, "clean_top": r.clean_top, "corrupt_top": r.corrupt_top}
                   for r in g.itertuples(index=False)]
        q = assess_cell(batches, thresholds)
        n_batches = int(g["n_batches"].iloc[0])
        q.update(cell_id=cell, n_prompts=int(sum(len(b["clean_ld"]) for b in batches)), batches_present=len(g),
                 complete=sorted(int(b) for b in g["batch"]) == list(range(n_batches)))
        found[cell] = q
    return found


def join_flags(flags) -> str:
    """["low_effect", "low_accuracy"] -> "low_effect,low_accuracy" ("" for none)."""
    return ",".join(flags or [])


def split_flags(flags) -> List[str]:
    """The inverse of ``join_flags``; a list passes through, None / NaN is no flag."""
    if flags is None or (isinstance(flags, float) and math.isnan(flags)):
        return []
    if isinstance(flags, str):
        return [f for f in flags.replace(" ", ",").split(",") if f]
    return list(flags)


def cell_quality(out: str, cells: Optional[Iterable[str]] = None, complete_only: bool = True, strict: bool = False,
                 min_effect_vs_clean: Optional[float] = None, min_effect_vs_spread: Optional[float] = None,
                 min_accuracy: Optional[float] = None) -> pd.DataFrame:
    """Per cell, how far its result can be trusted: what ``reduce`` computes (``parameters.quality``
    of its result JSON, the summary page's flags), from the cell's usable unit files.

    Columns (``QUALITY_COLUMNS``): cell_id, complete, n_prompts, batches_present, clean_ld,
    corrupt_ld, effect (LD_clean - LD_corr over every prompt), effect_spread (standard deviation over
    batches of each batch's effect, 0 for one batch), ld_spread (standard deviation over prompts of
    the clean LD), clean_accuracy, flip_fraction (NaN when a unit file does not record top tokens),
    flags (comma-separated: ``degenerate``, ``low_effect``, ``low_accuracy``; "" for none), flagged
    (bool), reasons (list of one-line explanations, the C++ text).

    Thresholds: ``quality_thresholds`` (defaults, then the manifest's ``quality``, then these
    keyword arguments). Only complete (``done``) cells by default, as ``reduce`` assesses only
    those; ``complete_only=False`` adds the cells with some usable batches (``complete`` False: their
    numbers are provisional). Damaged and foreign files: ``SweepWarning`` (``strict``: ``SweepError``)."""
    manifest, rows, units = _scan(out, cells, keep=_KEPT_QUALITY)
    for (cid, b), u in units.items():
        u["path"] = unit_path(out, cid, b)
    _report(rows, strict, "cell_quality")
    t = quality_thresholds(manifest, min_effect_vs_clean, min_effect_vs_spread, min_accuracy)
    found = _quality_rows(_units_table(manifest, units), t)
    recs = []
    for c in manifest["cells"]:
        q = found.get(c["id"])
        if q is None or (complete_only and not q["complete"]):
            continue
        recs.append({**q, "flags": join_flags(q["flags"])})
    if not recs:
        warnings.warn(SweepWarning(f"cell_quality: no {'complete ' if complete_only else ''}cell in {out} "
                                   f"({_counts(rows)})"), stacklevel=2)
    df = pd.DataFrame(recs, columns=QUALITY_COLUMNS)
    df["complete"] = df["complete"].astype(bool)
    df["flagged"] = df["flagged"].astype(bool)
    return df


SWEEP_COLUMNS = SETTINGS + ["batch", "upstream", "downstream", "from_edge", "to_edge", "up_index", "down_index", "score",
                            "norm_score", "complete", "flags", "arch"]
# The wide format: one row per (cell, usable batch); ``scores`` holds the batch's raw scores as a
# float32 array over its graph's edge table (``df.attrs["edges"][graph]``), or over its top-k edges
# (``edge_ids``, best first) when ``top_k`` is given.
WIDE_COLUMNS = SETTINGS + ["batch", "arch", "graph", "complete", "flags", "clean_ld", "corrupt_ld", "scale", "n_edges",
                           "scores"]
EDGE_COLUMNS = ["edge", "upstream", "downstream", "from_edge", "to_edge", "up_index", "down_index"]


def arch_of(model, n_layers, n_heads) -> str:
    """The architecture a cell's node names belong to: ``BM2.24x14`` (model number, which names the
    family in a job: BM1 GPT-Neo, BM2 Qwen2, BM3 Llama; layers x heads). Node names (``l0.h3``)
    are comparable only between cells of one architecture."""
    try:
        return f"BM{int(model)}.{int(n_layers)}x{int(n_heads)}"
    except (TypeError, ValueError):
        return f"BM{model}.{n_layers}x{n_heads}"


def file_name(node: str) -> str:
    """The inverse of ``display_name``: ``l1.h3.q`` -> ``head.1.3.q``, ``l0.mlp`` -> ``mlp.0``."""
    m = re.match(r"^l(\d+)\.(?:h(\d+)(?:\.([qkv]))?|(mlp))$", node)
    if not m:
        return node
    if m.group(4):
        return f"mlp.{m.group(1)}"
    return f"head.{m.group(1)}.{m.group(2)}" + (f".{m.group(3)}" if m.group(3) else "")


def _edge_wanted(edges):
    """A function (arch, upstream names, downstream names, ui, di) -> bool mask over a graph's
    edges for ``load_sweep(edges=...)``: pairs of node names in either notation (``("l0.h1",
    "l1.mlp")`` or ``("head.0.1", "mlp.1")``), a table with from_edge / to_edge (or upstream /
    downstream) columns such as ``compare.consistent_edges``' (with an ``arch`` column its edges
    select in their own architecture only), or {arch: pairs}."""
    if edges is None:
        return None
    per_arch: Dict[Optional[str], set] = {}

    def add(arch, pairs):
        s = per_arch.setdefault(arch, set())
        for p in pairs:
            if len(p) != 2:
                raise ValueError(f"edges: {p!r} is not a (from, to) pair of node names")
            s.add((file_name(str(p[0])), file_name(str(p[1]))))

    if isinstance(edges, pd.DataFrame):
        a, b = ("from_edge", "to_edge") if "from_edge" in edges else ("upstream", "downstream")
        if a not in edges or b not in edges:
            raise ValueError("edges: a table needs from_edge and to_edge (or upstream and downstream) columns")
        if "arch" in edges:
            for arch, g in edges.groupby("arch", observed=True):
                add(str(arch), zip(g[a].astype(str), g[b].astype(str)))
        else:
            add(None, zip(edges[a].astype(str), edges[b].astype(str)))
    elif isinstance(edges, dict):
        for arch, pairs in edges.items():
            add(str(arch), pairs)
    else:
        add(None, list(edges))

    def mask(arch, up, down, ui, di):
        want = per_arch.get(None, set()) | per_arch.get(arch, set())
        if not want:
            return np.zeros(len(ui), dtype=bool)
        ups = {n for n, _ in want}
        downs = {n for _, n in want}
        up_ok = np.array([n in ups for n in up], dtype=bool)
        down_ok = np.array([n in downs for n in down], dtype=bool)
        m = up_ok[ui] & down_ok[di]
        for i in np.nonzero(m)[0]:
            m[i] = (up[ui[i]], down[di[i]]) in want
        return m

    return mask


def _top_k(raw: np.ndarray, scale: float, ui: np.ndarray, di: np.ndarray, k: int, signed: bool) -> np.ndarray:
    """Indices (into raw) of the k edges ranked first as ``compare.top_n`` ranks them: by |norm
    score| (signed: norm score) largest first, ties by (upstream, downstream) index; raw score when
    the cell is degenerate (no normalised score)."""
    s = raw.astype(np.float64) * scale if np.isfinite(scale) else raw.astype(np.float64)
    key = s if signed else np.abs(s)
    if k >= len(key):
        cand = np.arange(len(key))
    else:
        kth = np.partition(key, len(key) - k)[len(key) - k]
        cand = np.nonzero(key >= kth)[0]  # every tie at the boundary, then the exact order
    order = np.lexsort((di[cand], ui[cand], -key[cand]))
    return cand[order[:k]]


def load_sweep(out: str, cells=None, complete_only: bool = False,
               strict: bool = False, min_effect_vs_clean: Optional[float] = None,
               min_effect_vs_spread: Optional[float] = None, min_accuracy: Optional[float] = None,
               edges=None, top_k: Optional[int] = None, signed_rank: bool = False, wide: bool = False) -> pd.DataFrame:
    """The scores of a sweep: the tidy table (one row per cell, usable batch and edge) or, with
    ``wide=True``, one row per (cell, usable batch) with the scores as an array.

    Filters, applied while reading (a cell left out is never read; only one cell's unit files are
    in memory at a time):

    - ``cells``: cell ids, a dict {setting: value or list} (``{"model": 2, "feature":
      "EngTableName"}``, the manifest's settings) or a callable on a manifest cell entry;
    - ``edges``: only these edges (pairs of node names in either notation, a table with from_edge /
      to_edge columns such as ``compare.consistent_edges``', or {arch: pairs}; names select within
      each architecture, they are never matched across architectures' meanings);
    - ``top_k``: per batch only its k first edges by |normalised score| (``signed_rank``: by the
      signed score), ties by (upstream, downstream) index: ``compare.top_n``'s order;
    - ``complete_only``: only complete (``done``) cells.

    Tidy columns (``SWEEP_COLUMNS``): the cell's settings (``SETTINGS``, the manifest's), ``batch``,
    ``upstream`` / ``downstream`` (node names as in the file, e.g. ``head.0.3``, ``mlp.1``),
    ``from_edge`` / ``to_edge`` (the notebook's names, e.g. ``l0.h3``), ``up_index`` / ``down_index``
    (graph indices, the ranking's tie order), ``score`` (raw, float32 as stored), ``norm_score``
    (score x 1 / (LD_clean - LD_corr), NaN for a degenerate cell), ``complete`` (every batch 0 ..
    n_batches - 1 of the manifest is there and usable), ``flags`` (the cell's quality flags,
    comma-separated, "" for none: ``cell_quality``'s, from its usable batches, under the manifest's
    thresholds or the keyword arguments; ``compare.edge_sets`` leaves flagged cells out by
    default), ``arch`` (``arch_of``: node names compare only within one).

    Wide columns (``WIDE_COLUMNS``): the settings, ``batch``, ``arch``, ``graph`` (the key of its
    edge table in ``df.attrs["edges"]``: the arch, with ``/g2``, ``/g3``... for other graphs of that
    architecture, e.g. ``downstream_heads = "none"``), ``complete``, ``flags``, ``clean_ld`` /
    ``corrupt_ld`` (the cell's baselines), ``scale`` (1 / (LD_clean - LD_corr), NaN when
    degenerate: ``norm_score = scores.astype(float64) * scale``), ``n_edges``, ``scores`` (float32
    array over the edge table's rows, after the ``edges`` filter; with ``top_k`` the k first edges,
    best first, and a column ``edge_ids`` with their rows in the edge table). The arrays of one
    cell are rows of one matrix. ``df.attrs["edges"]``: {graph: table with ``EDGE_COLUMNS``}.
    ``score_matrix`` stacks one graph's rows, ``wide_to_tidy`` gives the tidy table.

    Damaged and foreign unit files are left out with a ``SweepWarning`` naming them
    (``strict=True``: ``SweepError``); an empty table comes with a ``SweepWarning`` saying why.
    """
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) < 1):
        raise ValueError(f"top_k = {top_k!r}: must be a positive number of edges")
    manifest = read_manifest(out)
    wanted = _select(manifest, cells, os.path.join(out, "sweep.json"))
    t = quality_thresholds(manifest, min_effect_vs_clean, min_effect_vs_spread, min_accuracy)
    edge_mask = _edge_wanted(edges)
    columns = WIDE_COLUMNS + (["edge_ids"] if top_k is not None and wide else []) if wide else SWEEP_COLUMNS
    rows: list = []
    parts: list = []          # tidy: frames; wide: row dicts
    graphs: Dict[tuple, str] = {}      # (arch, graph bytes) -> graph key
    edge_tables: Dict[str, pd.DataFrame] = {}
    n_per_arch: Dict[str, int] = {}
    statuses: Dict[str, str] = {}
    any_units = any_complete = False
    for c, crows, cunits in _scan_cells(out, manifest, wanted, keep=True):
        rows += crows
        statuses.update(_statuses({"cells": [c]}, crows))
        if not cunits:
            continue
        any_units = True
        table = _units_table(manifest, {(c["id"], b): u for b, u in cunits.items()})
        b0 = baselines(table).iloc[0]
        complete = bool(b0["complete"])
        any_complete |= complete
        if complete_only and not complete:
            continue
        flags = join_flags(_quality_rows(table, t)[c["id"]]["flags"])
        scale = np.nan if b0["degenerate"] else 1.0 / (b0["clean_ld"] - b0["corrupt_ld"])
        settings = table.iloc[0][SETTINGS].to_dict()
        arch = arch_of(settings["model"], settings["n_layers"], settings["n_heads"])
        first = cunits[min(cunits)]["data"]
        up = np.asarray(first["upstream"], dtype=object)
        down = np.asarray(first["downstream"], dtype=object)
        valid = np.asarray(first["valid"]).astype(bool).reshape(len(up), len(down))
        ui, di = np.nonzero(valid)
        if edge_mask is not None:
            sel = np.nonzero(edge_mask(arch, up, down, ui, di))[0]
            ui, di = ui[sel], di[sel]
        gkey = (arch, tuple(up), tuple(down), valid.tobytes(), edge_mask is not None)
        if gkey not in graphs:
            n_per_arch[arch] = n_per_arch.get(arch, 0) + 1
            name = arch if n_per_arch[arch] == 1 else f"{arch}/g{n_per_arch[arch]}"
            graphs[gkey] = name
            if wide:
                edge_tables[name] = pd.DataFrame({
                    "edge": np.arange(len(ui), dtype=np.int32), "upstream": up[ui], "downstream": down[di],
                    "from_edge": [display_name(n) for n in up[ui]], "to_edge": [display_name(n) for n in down[di]],
                    "up_index": ui.astype(np.int32), "down_index": di.astype(np.int32)}, columns=EDGE_COLUMNS)
        graph = graphs[gkey]
        batches = sorted(cunits)
        width = len(ui) if top_k is None else min(int(top_k), len(ui))
        if wide:
            block = np.empty((len(batches), width), dtype=np.float32)  # the cell's rows, one matrix
            ids = np.empty((len(batches), width), dtype=np.int32) if top_k is not None else None
        for i, b in enumerate(batches):
            d = cunits[b]["data"]
            scores = np.asarray(d["scores"], dtype=np.float32).reshape(len(up), len(down))
            raw = scores[ui, di]
            pick = None if top_k is None else _top_k(raw, scale, ui, di, int(top_k), signed_rank)
            if wide:
                if pick is None:
                    block[i] = raw
                else:
                    block[i] = raw[pick]
                    ids[i] = pick
                row = dict(settings, batch=b, arch=arch, graph=graph, complete=complete, flags=flags,
                           clean_ld=float(b0["clean_ld"]), corrupt_ld=float(b0["corrupt_ld"]), scale=scale,
                           n_edges=width, scores=block[i])
                if ids is not None:
                    row["edge_ids"] = ids[i]
                parts.append(row)
            else:
                keep_i = np.arange(len(raw)) if pick is None else np.sort(pick)  # edge order
                r = raw[keep_i]
                frame = pd.DataFrame({
                    "batch": b, "upstream": up[ui[keep_i]], "downstream": down[di[keep_i]],
                    "up_index": ui[keep_i].astype(np.int32), "down_index": di[keep_i].astype(np.int32),
                    "score": r,
                    # As the reducer: the float32 score promoted to double, times the double scale.
                    "norm_score": r.astype(np.float64) * scale,
                })
                for k in SETTINGS:
                    frame[k] = settings[k]
                frame["complete"] = complete
                frame["flags"] = flags
                frame["arch"] = arch
                parts.append(frame)
        cunits.clear()  # this cell's unit files are no longer needed
    _report(rows, strict, "load_sweep", stacklevel=3)
    if not any_units:
        warnings.warn(SweepWarning(f"load_sweep: no usable unit file in {out} ({_counts(rows)})"), stacklevel=2)
    elif complete_only and not any_complete:
        listed = "; ".join(f"{c} {s}" for c, s in list(statuses.items())[:5]) + (" ..." if len(statuses) > 5 else "")
        warnings.warn(SweepWarning(f"load_sweep(complete_only=True): no complete cell in {out} ({listed})"),
                      stacklevel=2)
    if wide:
        df = pd.DataFrame(parts, columns=columns)
        for k in ("cell_id", "feature", "flags", "arch", "graph"):
            df[k] = df[k].astype("category")
        df.attrs["format"] = "wide"
        df.attrs["edges"] = edge_tables
        df.attrs["top_k"] = top_k
        df.attrs["signed_rank"] = bool(signed_rank)
        return df
    if not parts:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    names = {n: display_name(n) for n in pd.unique(pd.concat([df["upstream"], df["downstream"]]))}
    df["from_edge"] = df["upstream"].map(names)
    df["to_edge"] = df["downstream"].map(names)
    for k in ("upstream", "downstream", "from_edge", "to_edge", "cell_id", "feature", "flags", "arch"):
        df[k] = df[k].astype("category")
    return df[SWEEP_COLUMNS]


def edge_table(wide: pd.DataFrame, graph: Optional[str] = None) -> pd.DataFrame:
    """The edge table of one graph of a wide table (``EDGE_COLUMNS``); ``graph`` may be omitted
    when the table has one."""
    tables = wide.attrs.get("edges")
    if tables is None:
        raise ValueError("not a wide table (load_sweep(..., wide=True))")
    if graph is None:
        present = [str(g) for g in pd.unique(wide["graph"].astype(str))] if len(wide) else list(tables)
        if len(present) != 1:
            raise ValueError(f"the table holds {len(present)} graphs ({', '.join(present)}): name one "
                             "(node names are not comparable across architectures)")
        graph = present[0]
    if graph not in tables:
        raise ValueError(f"graph {graph!r}: not in the table (it has {', '.join(tables) or 'none'})")
    return tables[graph]


def score_matrix(wide: pd.DataFrame, graph: Optional[str] = None, normalised: bool = True):
    """One graph's rows of a wide table as a matrix: (matrix [rows x edges], the rows (the wide
    table without its arrays), the edge table). Normalised scores as float64 (NaN for degenerate
    cells), raw ones as float32. With ``top_k`` the edges outside a row's top-k are NaN."""
    edges = edge_table(wide, graph)
    g = str(graph) if graph is not None else str(wide["graph"].iloc[0]) if len(wide) else None
    sub = wide[wide["graph"].astype(str) == g] if g is not None else wide.iloc[:0]
    dtype = np.float64 if normalised else np.float32
    m = np.full((len(sub), len(edges)), np.nan, dtype=dtype) if "edge_ids" in sub else np.empty(
        (len(sub), len(edges)), dtype=dtype)
    for i, r in enumerate(sub.itertuples(index=False)):
        v = r.scores.astype(dtype) * (r.scale if normalised else 1)
        if "edge_ids" in sub:
            m[i, r.edge_ids] = v
        else:
            m[i] = v
    cols = [c for c in sub.columns if c not in ("scores", "edge_ids")]
    return m, sub[cols].reset_index(drop=True), edges


def wide_to_tidy(wide: pd.DataFrame) -> pd.DataFrame:
    """The tidy table (``SWEEP_COLUMNS``) of a wide one: what ``load_sweep`` without ``wide`` gives
    for the same filters (rows in edge order). Memory: one row per edge of every batch, so filter
    first (a cell, ``edges``, ``top_k``)."""
    if wide.attrs.get("format") != "wide":
        raise ValueError("not a wide table (load_sweep(..., wide=True))")
    frames = []
    for r in wide.itertuples(index=False):
        e = wide.attrs["edges"][str(r.graph)]
        idx = np.sort(r.edge_ids) if "edge_ids" in wide else np.arange(len(r.scores))
        raw = r.scores if "edge_ids" not in wide else r.scores[np.argsort(r.edge_ids)]
        frame = pd.DataFrame({"batch": r.batch, "upstream": e["upstream"].to_numpy()[idx],
                              "downstream": e["downstream"].to_numpy()[idx],
                              "from_edge": e["from_edge"].to_numpy()[idx], "to_edge": e["to_edge"].to_numpy()[idx],
                              "up_index": e["up_index"].to_numpy()[idx], "down_index": e["down_index"].to_numpy()[idx],
                              "score": np.asarray(raw, dtype=np.float32),
                              "norm_score": np.asarray(raw, dtype=np.float32).astype(np.float64) * r.scale})
        for k in SETTINGS + ["complete", "flags", "arch"]:
            frame[k] = getattr(r, k)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=SWEEP_COLUMNS)
    df = pd.concat(frames, ignore_index=True)
    for k in ("upstream", "downstream", "from_edge", "to_edge", "cell_id", "feature", "flags", "arch"):
        df[k] = df[k].astype(str).astype("category")
    return df[SWEEP_COLUMNS]


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


def _status(states: List[str]) -> str:
    if "foreign" in states:
        return "foreign"
    if "damaged" in states:
        return "damaged"
    if "failed" in states:
        return "failed"
    ok = states.count("ok")
    return "done" if ok == len(states) else "partial" if ok else "missing"


def _statuses(manifest: dict, rows) -> Dict[str, str]:
    by_cell: Dict[str, List[str]] = {}
    for cid, _, state, _, _ in rows:
        if state != "extra":
            by_cell.setdefault(cid, []).append(state)
    return {c["id"]: _status(by_cell[c["id"]]) for c in manifest["cells"] if c["id"] in by_cell}


SUMMARY_QUALITY_COLUMNS = ["clean_ld", "corrupt_ld", "effect", "effect_spread", "ld_spread", "clean_accuracy",
                           "flip_fraction", "flags", "flagged"]


def cell_summary(out: str, cells: Optional[Iterable[str]] = None, min_effect_vs_clean: Optional[float] = None,
                 min_effect_vs_spread: Optional[float] = None, min_accuracy: Optional[float] = None) -> pd.DataFrame:
    """One row per manifest cell: cell_id, status (``cell_status``), n_batches (the manifest's),
    how many of its batches are ok, missing, failed, damaged, foreign, and for ``done`` cells their
    quality (``cell_quality``: clean_ld, corrupt_ld, effect, effect_spread, ld_spread,
    clean_accuracy, flip_fraction, flags, flagged; NaN / None / <NA> for the other cells). The
    keyword arguments override the manifest's quality thresholds (``quality_thresholds``)."""
    manifest, rows, units = _scan(out, cells, keep=_KEPT_QUALITY)
    for (cid, b), u in units.items():
        u["path"] = unit_path(out, cid, b)
    st = _statuses(manifest, rows)
    t = quality_thresholds(manifest, min_effect_vs_clean, min_effect_vs_spread, min_accuracy)
    quality = _quality_rows(_units_table(manifest, units), t)
    out_rows = []
    for c in manifest["cells"]:
        if c["id"] not in st:
            continue
        states = [r[2] for r in rows if r[0] == c["id"] and r[2] != "extra"]
        row = {"cell_id": c["id"], "status": st[c["id"]], "n_batches": int(c["n_batches"]),
               **{s: states.count(s) for s in ("ok", "missing", "failed", "damaged", "foreign")}}
        q = quality.get(c["id"]) if st[c["id"]] == "done" else None
        if q is not None:
            row.update({k: q[k] for k in SUMMARY_QUALITY_COLUMNS})
            row["flags"] = join_flags(q["flags"])
        else:
            row.update({k: float("nan") for k in SUMMARY_QUALITY_COLUMNS})
            row.update(flags=None, flagged=pd.NA)
        out_rows.append(row)
    df = pd.DataFrame(out_rows, columns=["cell_id", "status", "n_batches", "ok", "missing", "failed", "damaged",
                                         "foreign"] + SUMMARY_QUALITY_COLUMNS)
    df["flagged"] = df["flagged"].astype("boolean")
    return df


def cell_status(out: str, cells: Optional[Iterable[str]] = None, strict: bool = False) -> Dict[str, str]:
    """Per manifest cell, from its batches 0 .. n_batches - 1 (the manifest's count), the first
    that applies: ``foreign`` (a unit file of another sweep, cell or batch), ``damaged`` (a unit file
    that cannot be read whole), ``failed`` (a failure note and no unit file), ``done`` (every batch
    usable), ``partial`` (some), ``missing`` (none). Without damaged or foreign files this is the
    rule of ``tinysql-eap reduce`` and ``status``. Damaged and foreign files also raise a
    ``SweepWarning`` naming them (``strict=True``: ``SweepError``)."""
    manifest, rows, _ = _scan(out, cells)
    _report(rows, strict, "cell_status")
    return _statuses(manifest, rows)
