"""Results do not depend on the number of ranks: bit-identical with 1 and 2 ranks (one thread each),
equal to float tolerance with rank groups of 2 (the partial sums add in another order)."""
from sweeplib import compare_sweeps, run, summary, write_job

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
