"""`pip install -e analysis` works offline inside a virtual environment made with
`python3 -m venv --system-site-packages` (Debian's h5py, pandas, plotly; setuptools from
python3-setuptools through --no-build-isolation), and leaves the source tree as it was."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import make_sweep

ANALYSIS = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def listing(root):
    found = set()
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        found |= {os.path.relpath(os.path.join(d, f), root) for f in files if not f.endswith(".pyc")}
        found |= {os.path.relpath(os.path.join(d, x), root) + "/" for x in dirs}
    return found


def test_pip_install_editable_in_a_venv_offline(tmp_path):
    py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    probe = subprocess.run([py, "-c", "import ensurepip, venv"], capture_output=True)
    assert probe.returncode == 0, "python3-venv is not installed (scripts/setup.sh installs it)"
    venv = tmp_path / "venv"
    subprocess.run([py, "-m", "venv", "--system-site-packages", str(venv)], check=True, capture_output=True)
    before = listing(ANALYSIS)
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-deps", "-e", ANALYSIS],
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert listing(ANALYSIS) == before, sorted(listing(ANALYSIS) ^ before)  # no egg-info or build folder left
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    make_sweep(out, cells=[dict(status="done")])
    code = ("import sys, tinysql_eap; from tinysql_eap import load; "
            "w = load.load_sweep(sys.argv[1], wide=True); print(tinysql_eap.__file__); print(len(w))")
    r = subprocess.run([str(venv / "bin" / "python"), "-c", code, out], capture_output=True, text=True, env=env,
                       cwd=str(tmp_path), timeout=120)
    assert r.returncode == 0, r.stderr
    path, rows = r.stdout.split()
    assert path == os.path.join(ANALYSIS, "tinysql_eap", "__init__.py")  # editable: the source tree's files
    assert rows == "3"
    show = subprocess.run([str(venv / "bin" / "pip"), "show", "tinysql-eap-analysis"], capture_output=True, text=True,
                          env=env)
    assert "Version: 0.2.0" in show.stdout
