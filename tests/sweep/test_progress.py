"""Issue 14, item 5: the progress lines of a run under mpirun (not a terminal) come at least every
5 s, also while rank 0 is inside a long unit; they never say "0/0" or "ETA ?"; a run with nothing
left to do says so; `--log-level debug` after the subcommand writes debug lines that say what each
rank does (units taken, time running, writing and waiting, model cache hits) into its log."""
import re
import time

from sweeplib import make_model, start, write_job, log_lines


def progress_lines(p, timeout=300):
    """[(seconds since start, line)] of the run's [progress] lines, timed as they arrive."""
    t0 = time.monotonic()
    lines = []
    for line in p.stderr:
        if line.startswith("[progress]"):
            lines.append((time.monotonic() - t0, line.strip()))
        assert time.monotonic() - t0 < timeout
    p.wait()
    return lines


def test_progress_lines_under_mpirun(tmp_path):
    # Units of about a second each on this machine (a wider model, 32 prompts per batch).
    model = make_model(tmp_path / "m", d_model=256, layers=4, heads=4)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, model, features=("EngTableName", "EngFieldName", "DefTableName"),
                    batches=10, batch_size=32)
    p = start(job, np=2, args=("--log-level", "debug"))
    lines = progress_lines(p)
    assert p.returncode == 0, p.stdout.read()
    text = [l for _, l in lines]
    assert text, "no progress line"
    assert text[0] == re.sub(r"elapsed [0-9:]+", "elapsed 0:00:00", text[0]) and "no unit finished yet" in text[0], text
    assert text[-1].startswith("[progress] units 30/30,"), text
    assert not any("0/0" in l or "ETA ?" in l for l in text), text
    for l in text[1:]:
        assert re.match(r"\[progress\] units \d+/30, [\d.]+ units/min, elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d$", l) or \
            "no unit finished yet" in l, l
    # At least every 5 s (a second of slack for a loaded machine).
    times = [t for t, _ in lines]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert times[-1] > 6, f"the sweep took {times[-1]:.1f} s: too short to see the interval"
    assert max(gaps) <= 6.0, (gaps, text)
    # The debug lines of every rank's log.
    assert log_lines(out, r"\[debug\] takes unit \d+ of 30: score "), "no debug line for the units taken"
    assert log_lines(out, r"\[debug\] score \S+ batch \d+: ran [\d.]+ s, published [\d.]+ s")
    assert log_lines(out, r"\[debug\] model cache hit: ")
    assert log_lines(out, r"\[debug\] rank \d time: [\d.]+ s running units")
    # Nothing left to do: one line that says so.
    p = start(job, np=2)
    lines = progress_lines(p)
    assert p.returncode == 0
    assert len(lines) == 1 and re.match(r"\[progress\] nothing to do: 30 units done before, elapsed ", lines[0][1]), lines
