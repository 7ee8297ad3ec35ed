"""Bad job files: a one-line error naming the file, the line and the key, exit 2, and no output folder."""
import os
import re
import subprocess

import pytest

from sweeplib import BIN, write_job

# (name, edit of the good job's text, expected message after "FILE:LINE: ")
CASES = [
    ("syntax", lambda t: t.replace("batches = 2", "batches = = 2"), r"settings\.batches: syntax error"),
    ("unknown_key", lambda t: t.replace("batches = 2", "batchez = 2"), r"settings\.batchez: unknown key"),
    ("wrong_type", lambda t: t.replace("batches = 2", 'batches = "two"'), r"settings\.batches: expected an integer"),
    ("wrong_type_list", lambda t: t.replace("use_novel_names = [false]", "use_novel_names = [0]"),
     r"grid\.use_novel_names: expected a list of true/false"),
    ("empty_list", lambda t: t.replace('features = ["EngTableName", "EngFieldName"]', "features = []"),
     r"grid\.features: empty list"),
    ("all_excluded", lambda t: t + '\n[[exclude]]\nmodel = 1\n', r"grid: every cell is excluded"),
    ("unknown_feature", lambda t: t.replace('"EngFieldName"', '"EngFieldNam"'), r"grid\.features: unknown feature 'EngFieldNam'"),
    ("missing_model", lambda t: t.replace('cs1 = "', 'cs1 = "/nonexistent/model/'), r"models\.BM1\.cs1: /nonexistent/model/.*no such folder"),
]


def line_of(text, needle):
    return next(i for i, l in enumerate(text.splitlines(), 1) if needle in l)


@pytest.mark.parametrize("name,edit,message", CASES, ids=[c[0] for c in CASES])
def test_bad_job(model, tmp_path, name, edit, message):
    out = tmp_path / "out"
    path = write_job(tmp_path / f"{name}.toml", out, model)
    text = edit(open(path).read())
    open(path, "w").write(text)
    p = subprocess.run([BIN, "run", path], capture_output=True, text=True)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    m = re.match(r"tinysql-eap: error: (.*?):(\d+): (.*)$", lines[0])
    assert m and m.group(1) == path, lines[0]
    assert re.match(message, m.group(3)), lines[0]
    # the line named is the one holding the culprit
    needle = {"syntax": "= =", "unknown_key": "batchez", "wrong_type": '"two"', "wrong_type_list": "[0]",
              "empty_list": "features", "all_excluded": "[grid]", "unknown_feature": "EngFieldNam",
              "missing_model": "/nonexistent"}[name]
    assert int(m.group(2)) == line_of(text, needle), lines[0]
    assert not out.exists(), f"{name}: output folder left behind"


@pytest.mark.parametrize("where", ["under_a_file", "is_a_file"])
def test_output_not_writable(model, tmp_path, where):
    # CI runs as root, which a read-only mode would not stop: use a regular file in the way.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    out = blocker / "out" if where == "under_a_file" else blocker
    path = write_job(tmp_path / "job.toml", out, model)
    p = subprocess.run([BIN, "run", path], capture_output=True, text=True)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert re.match(re.escape(f"tinysql-eap: error: {path}:1: output: {out}: ") + ".*cannot be created or written", lines[0]), lines[0]
    assert blocker.read_text() == "not a folder\n"
    assert sorted(os.listdir(tmp_path)) == ["a-file", "job.toml"]
