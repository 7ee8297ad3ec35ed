"""Results do not depend on the number of ranks: bit-identical with 1 and 2 ranks (one thread each),
equal to float tolerance with rank groups of 2 (the partial sums add in another order)."""
import os

from sweeplib import compare_sweeps, read_unit, run, summary, unit_files, write_job

FEATURES = ("EngTableName", "EngFieldName", "DefFieldName")


def test_one_and_two_ranks_bit_identical(model, tmp_path):
    one = write_job(tmp_path / "one.toml", tmp_path / "one", model, FEATURES)
    two = write_job(tmp_path / "two.toml", tmp_path / "two", model, FEATURES)
    assert summary(run(one).stdout) == (6, 0, 0, 6)
    assert summary(run(two, np=2).stdout) == (6, 0, 0, 6)
    assert compare_sweeps(tmp_path / "one", tmp_path / "two", exact=True) == 6


def test_group_of_two_equals_one_rank(model, tmp_path):
    one = write_job(tmp_path / "one.toml", tmp_path / "one", model, FEATURES)
    grp = write_job(tmp_path / "grp.toml", tmp_path / "grp", model, FEATURES, group_size=2)
    run(one)
    p = run(grp, np=2)
    assert summary(p.stdout) == (6, 0, 0, 6)
    assert compare_sweeps(tmp_path / "one", tmp_path / "grp", exact=False) == 6


def test_scoring_methods_rank_counts(model, tmp_path):
    """eap-ig-inputs and clean-corrupted (issue 12): bit-identical with 1 and 2 ranks, equal to float
    tolerance with a rank group of 2 (each rank sums its share of the prompts' gradients); the
    method is recorded in every unit file."""
    for method, extra in (("eap-ig-inputs", {"ig_steps": 3}), ("clean-corrupted", {})):
        name = method.replace("-", "_")
        jobs = {kind: write_job(tmp_path / f"{name}_{kind}.toml", tmp_path / f"{name}_{kind}", model, FEATURES[:2],
                                method=method, **extra, **({"group_size": 2} if kind == "grp" else {}))
                for kind in ("one", "two", "grp")}
        assert summary(run(jobs["one"]).stdout) == (4, 0, 0, 4)
        assert summary(run(jobs["two"], np=2).stdout) == (4, 0, 0, 4)
        assert summary(run(jobs["grp"], np=2).stdout) == (4, 0, 0, 4)
        assert compare_sweeps(tmp_path / f"{name}_one", tmp_path / f"{name}_two", exact=True) == 4
        assert compare_sweeps(tmp_path / f"{name}_one", tmp_path / f"{name}_grp", exact=False) == 4
        for rel in unit_files(tmp_path / f"{name}_one"):
            _, attrs = read_unit(os.path.join(tmp_path / f"{name}_one", rel))
            assert attrs["method"] == method, rel
            if method == "eap-ig-inputs":
                assert int(attrs["ig_steps"]) == 3, rel
