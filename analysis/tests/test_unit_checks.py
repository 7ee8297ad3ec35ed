"""Every unit file is checked before it is used (issue 15): one that cannot be read whole is
"damaged", one of another sweep (other seed or model: another settings_hash), cell or batch is
"foreign". Neither is used; both are named (SweepWarning, inventory, cell_status) and never end
in an h5py traceback; strict=True makes them a one-line SweepError naming the file."""

import os
import re
import shutil
import warnings

import h5py
import numpy as np
import pytest

from conftest import make_sweep
from tinysql_eap import compare, load

pytestmark = pytest.mark.filterwarnings("error::tinysql_eap.load.SweepWarning")


@pytest.fixture
def two_cells(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    cells = make_sweep(out, cells=[dict(status="done"), dict(status="done", feature="DefFieldName")])
    return out, cells[0]["id"], cells[1]["id"]


def truncate_1000(path):
    os.truncate(path, 1000)


def cut_in_half(path):
    os.truncate(path, os.path.getsize(path) // 2)


def empty_file(path):
    os.truncate(path, 0)


def not_hdf5(path):
    with open(path, "wb") as f:
        f.write(b"HDF cut short")


def dataset_missing(path):
    with h5py.File(path, "r+") as f:
        del f["corrupt_word"]


def dataset_too_short(path):
    with h5py.File(path, "r+") as f:
        x = f["clean_logit_diff"][()]
        del f["clean_logit_diff"]
        f.create_dataset("clean_logit_diff", data=x[:-1])


def attribute_missing(path):
    with h5py.File(path, "r+") as f:
        del f.attrs["n_prompts"]


def not_a_unit_file(path):
    os.remove(path)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))


DAMAGE = [truncate_1000, cut_in_half, empty_file, not_hdf5, dataset_missing, dataset_too_short, attribute_missing,
          not_a_unit_file]
DAMAGE_REASON = {
    "dataset_missing": "dataset 'corrupt_word' is missing",
    "dataset_too_short": "dataset 'clean_logit_diff' has 3 values, expected 4",
    "attribute_missing": "attribute 'n_prompts' is missing",
    "not_a_unit_file": "not a tinysql-eap unit file",
}


@pytest.mark.parametrize("damage", DAMAGE, ids=[d.__name__ for d in DAMAGE])
def test_damaged_unit_is_not_done_and_named(two_cells, damage):
    out, bad_cell, good_cell = two_cells
    path = load.unit_path(out, bad_cell, 1)
    damage(path)
    # read_unit: one line naming the file, a SweepError (a ValueError), never h5py's own exception.
    with pytest.raises(load.SweepError) as e:
        load.read_unit(path)
    msg = str(e.value)
    assert msg.startswith(path + ": ") and "\n" not in msg, msg
    assert e.value.__suppress_context__ or e.value.__cause__ is None
    if damage.__name__ in DAMAGE_REASON:
        assert DAMAGE_REASON[damage.__name__] in msg, msg
    # Inventory and status: damaged, with the path; the other cell is untouched.
    inv = load.inventory(out).set_index(["cell_id", "batch"])
    assert inv.loc[(bad_cell, 1), "state"] == "damaged" and inv.loc[(bad_cell, 1), "path"] == path
    assert (inv.drop(index=(bad_cell, 1))["state"] == "ok").all()
    with pytest.warns(load.SweepWarning, match=r"cell_status: 1 unit file\(s\) not used: damaged " + re.escape(path)):
        assert load.cell_status(out) == {bad_cell: "damaged", good_cell: "done"}
    # The loaders leave it out and say so; the rest of the cell and the sweep load.
    with pytest.warns(load.SweepWarning, match="damaged " + re.escape(path)):
        df = load.load_sweep(out)
    bad = df[df["cell_id"] == bad_cell]
    assert sorted(bad["batch"].unique()) == [0, 2] and not bad["complete"].any()
    assert df[df["cell_id"] == good_cell]["complete"].all()
    with pytest.warns(load.SweepWarning, match=re.escape(bad_cell) + r" \(incomplete: 2 of 3 batches\)"):
        ce = compare.consistent_edges(df, top_n_edges=5)
    assert set(ce["cell_id"]) == {good_cell}
    with pytest.warns(load.SweepWarning, match="damaged " + re.escape(path)):
        units = load.load_units(out)
    assert (bad_cell, 1) not in set(zip(units["cell_id"], units["batch"]))
    # strict: one line naming the file.
    for f in (load.load_sweep, load.load_units, load.cell_status):
        with pytest.raises(load.SweepError, match="^" + re.escape(path) + ": damaged unit file: ") as e:
            f(out, strict=True)
        assert "\n" not in str(e.value)
    assert list(load.problems(out)["path"]) == [path]


@pytest.fixture
def other_sweep(tmp_path):
    """The same two cells in a sweep of another seed and one of other weights."""
    found = {}
    for name, change in (("seed", dict(seed=8)), ("model", dict(hf_model="synthetic/other-bm1"))):
        out = str(tmp_path / f"other-{name}")
        os.makedirs(out)
        make_sweep(out, cells=[dict(status="done", **change), dict(status="done", feature="DefFieldName", **change)],
                   seed=1)
        found[name] = out
    return found


@pytest.mark.parametrize("kind,reason", [
    ("seed", "seed '8', not '7'"),
    ("model", "weights 'synthetic/other-bm1', not 'synthetic/bm1'"),
])
def test_unit_of_another_sweep_is_foreign(two_cells, other_sweep, kind, reason):
    out, cell, good_cell = two_cells
    src = load.unit_path(other_sweep[kind], cell, 2)
    path = load.unit_path(out, cell, 2)
    shutil.copyfile(src, path)
    with h5py.File(src, "r") as f:
        theirs = f.attrs["settings_hash"]
        theirs = theirs.decode() if isinstance(theirs, bytes) else theirs
    with h5py.File(load.unit_path(out, cell, 0), "r") as f:
        mine = f.attrs["settings_hash"]
        mine = mine.decode() if isinstance(mine, bytes) else mine
    assert theirs != mine
    inv = load.inventory(out).set_index(["cell_id", "batch"])
    assert inv.loc[(cell, 2), "state"] == "foreign"
    why = inv.loc[(cell, 2), "reason"]
    assert f"settings_hash {theirs}, not the manifest's {mine}" in why and reason in why, why
    with pytest.warns(load.SweepWarning, match="foreign " + re.escape(path) + r" \(settings_hash " + theirs):
        assert load.cell_status(out) == {cell: "foreign", good_cell: "done"}
    with pytest.warns(load.SweepWarning, match="foreign " + re.escape(path)):
        df = load.load_sweep(out)
    assert sorted(df[df["cell_id"] == cell]["batch"].unique()) == [0, 1]
    # Its scores are not in the table: the batch's rows would carry the other sweep's numbers.
    with h5py.File(src, "r") as f:
        their_scores = f["scores"][()]
    assert not np.isin(their_scores[their_scores != 0], df["score"].to_numpy()).any()
    with pytest.raises(load.SweepError, match="^" + re.escape(path) + ": foreign unit file: settings_hash "):
        load.load_sweep(out, strict=True)


def test_unit_of_another_cell_or_batch_is_foreign(two_cells):
    out, cell, other = two_cells
    wrong_cell = load.unit_path(out, cell, 1)
    shutil.copyfile(load.unit_path(out, other, 1), wrong_cell)
    wrong_batch = load.unit_path(out, other, 2)
    shutil.copyfile(load.unit_path(out, other, 0), wrong_batch)
    inv = load.inventory(out).set_index(["cell_id", "batch"])
    assert inv.loc[(cell, 1), "state"] == inv.loc[(other, 2), "state"] == "foreign"
    assert inv.loc[(cell, 1), "reason"] == f"holds cell {other}, not {cell}"
    assert inv.loc[(other, 2), "reason"] == "holds batch 0, not 2"
    with pytest.warns(load.SweepWarning, match=r"2 unit file\(s\) not used") as w:
        assert load.cell_status(out) == {cell: "foreign", other: "foreign"}
    text = str(w[0].message)
    assert wrong_cell in text and wrong_batch in text
    with pytest.warns(load.SweepWarning):
        df = load.load_sweep(out)
    assert not df["complete"].any()


def test_identity_attributes_missing_are_foreign(two_cells):
    out, cell, _ = two_cells
    path = load.unit_path(out, cell, 0)
    with h5py.File(path, "r+") as f:
        del f.attrs["settings_hash"]
    inv = load.inventory(out).set_index(["cell_id", "batch"])
    assert inv.loc[(cell, 0), "state"] == "foreign"
    assert inv.loc[(cell, 0), "reason"].startswith("attribute 'settings_hash' is missing")
    with h5py.File(path, "r+") as f:
        del f.attrs["cell_id"]
    assert load.inventory(out).set_index(["cell_id", "batch"]).loc[(cell, 0), "reason"].startswith(
        "attribute 'cell_id' is missing")


def test_other_graph_is_foreign(two_cells):
    out, cell, _ = two_cells
    path = load.unit_path(out, cell, 2)
    with h5py.File(path, "r+") as f:
        v = f["valid"][()]
        v[0, -1] = 1 - v[0, -1]
        f["valid"][...] = v
    inv = load.inventory(out).set_index(["cell_id", "batch"])
    assert inv.loc[(cell, 2), "state"] == "foreign"
    assert "graph" in inv.loc[(cell, 2), "reason"] and load.unit_path(out, cell, 0) in inv.loc[(cell, 2), "reason"]


def test_extra_files_are_listed_not_used(two_cells):
    """A unit beyond the manifest's n_batches or of a cell the manifest does not list: ignored as
    `reduce` ignores it, listed by inventory and problems, no warning."""
    out, cell, other = two_cells
    beyond = load.unit_path(out, cell, 3)
    shutil.copyfile(load.unit_path(out, cell, 0), beyond)
    stray = load.unit_path(out, "BM9.CS9.EngTableName.novel0.synfield0.syntable0", 0)
    os.makedirs(os.path.dirname(stray))
    shutil.copyfile(load.unit_path(out, cell, 0), stray)
    assert load.cell_status(out) == {cell: "done", other: "done"}
    df = load.load_sweep(out)
    assert sorted(df["batch"].unique()) == [0, 1, 2] and df["complete"].all()
    p = load.problems(out)
    assert sorted(p["path"]) == sorted([beyond, stray]) and set(p["state"]) == {"extra"}


def test_manifest_errors_name_the_key(tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "sweep.json").write_text('{"cells": [{"id": "A", "n_batches": 0}]}')
    with pytest.raises(load.SweepError, match=re.escape(f"{out}/sweep.json: cells[0].n_batches: 0 is not a batch count")):
        load.cell_status(str(out))
    (out / "sweep.json").write_text('{"cells": [')
    with pytest.raises(load.SweepError, match=re.escape(f"{out}/sweep.json: not a sweep manifest")):
        load.load_sweep(str(out))
