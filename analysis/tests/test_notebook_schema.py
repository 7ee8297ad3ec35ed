"""A result JSON written by our C++ against the notebook: its own reload functions (copied
verbatim below) accept it; schema key by key, types, 8-decimal rounding, Python's json.dump text,
the notebook's edge names and file name."""

import json
import math
import os
import re
from typing import Any, Dict, List, Tuple

import pytest

from conftest import make_sweep, report_fixture_dir, run_teap
from tinysql_eap import sankey


# --- Verbatim from reference/tinysql_EAP_JSON-notebook.md (the reference) ------------------------

def load_eap_results(filepath: str) -> Dict[str, Any]:
   with open(filepath, 'r') as f:
       return json.load(f)

def results_to_edges(results: Dict[str, Any]) -> List[Tuple[str, str, float]]:
   return [
       (edge["from_edge"], edge["to_edge"], edge["score"])
       for edge in results["edges"]
   ]

# --- end of the notebook's code -------------------------------------------------------------------


METADATA = ["source", "timestamp", "model", "commandset", "hf_model", "feature_name", "use_novel_names",
            "use_synonyms_field", "use_synonyms_table", "num_sql_fields", "batch_size", "n_batches", "n_positions",
            "n_layers", "n_heads"]
METADATA_TYPES = dict(source=str, timestamp=str, model=int, commandset=int, hf_model=str, feature_name=str,
                      use_novel_names=bool, use_synonyms_field=bool, use_synonyms_table=bool, num_sql_fields=int,
                      batch_size=int, n_batches=int, n_positions=int, n_layers=int, n_heads=int)
PARAMETERS = ["top_n_edges", "clean_logit_diff", "corrupt_logit_diff", "clean_metric", "corrupt_metric"]
NAME = re.compile(r"^l\d+\.(h\d+(\.[qkv])?|mlp)$")


def eap_file_name(model_num, cs_num, feature_name, use_novel_names, use_synonyms_table, use_synonyms_field):
    # The notebook's eap_file_name(), with its globals as arguments.
    return f"eap_results.BM{model_num}.CS{cs_num}_cs1.{feature_name}.{str(use_novel_names)}.{str(use_synonyms_table)}.{str(use_synonyms_field)}.json"


def floats(x):
    if isinstance(x, float):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from floats(v)
    elif isinstance(x, list):
        for v in x:
            yield from floats(v)


def check_result_file(path):
    results = load_eap_results(path)
    edges = results_to_edges(results)
    text = open(path, encoding="utf-8").read()
    # Exactly what the notebook's save_eap_results (json.dump(indent=2)) writes for this object.
    assert text == json.dumps(results, indent=2)
    assert list(results) == ["metadata", "parameters", "edges"]
    md, pa = results["metadata"], results["parameters"]
    assert list(md) == METADATA
    for k, t in METADATA_TYPES.items():
        assert type(md[k]) is t, (k, md[k])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?", md["timestamp"])
    assert list(pa)[:5] == PARAMETERS
    assert type(pa["top_n_edges"]) is int
    for k in PARAMETERS[1:]:
        assert type(pa[k]) is float and math.isfinite(pa[k]), k
    for e in results["edges"]:
        assert list(e) == ["from_edge", "to_edge", "score"]
        assert NAME.match(e["from_edge"]) and NAME.match(e["to_edge"]), e
        assert type(e["score"]) is float
    # Every float is rounded to 8 decimals, as format_float/tensor_to_native leave it.
    for x in floats(results):
        assert round(x, 8) == x, x
    assert "NaN" not in text and "Infinity" not in text
    assert [(e["from_edge"], e["to_edge"], e["score"]) for e in results["edges"]] == edges
    assert os.path.basename(path) == eap_file_name(md["model"], md["commandset"], md["feature_name"],
                                                   md["use_novel_names"], md["use_synonyms_table"],
                                                   md["use_synonyms_field"])
    return results, edges


def test_fixture_json_written_by_the_library():
    d = report_fixture_dir()
    path = os.path.join(d, "eap_results.BM1.CS1_cs1.EngTableName.False.True.False.json")
    assert os.path.isfile(path)
    results, edges = check_result_file(path)
    names = {n for e in edges for n in e[:2]}
    assert {"l0.h3", "l1.h7.q", "l0.mlp"} <= names
    # Rounded as Python's round(x, 8): 0.312345678912 -> 0.31234568, -1.2e-09 -> -0.0.
    assert edges[0] == ("l0.h3", "l1.h7.q", 0.31234568)
    assert math.copysign(1, edges[-1][2]) == -1 and edges[-1][2] == 0
    assert results["parameters"]["clean_logit_diff"] == round(4.123456789123, 8)
    # The reloaded edges draw the notebook's way.
    fig = sankey.plot_eap_json_sankey(edges, layer_spacing=True)
    assert len(fig.data[0].node.label) == len(names)


def test_json_written_by_reduce(tmp_path):
    out = str(tmp_path / "sweep")
    os.makedirs(out)
    cells = make_sweep(out)
    run_teap("reduce", out, check=0)
    done = [c for c in cells if c["status"] == "done"]
    for c in done:
        name = eap_file_name(c["model"], c["commandset"], c["feature"], c["use_novel_names"],
                             c["use_synonyms_table"], c["use_synonyms_field"])
        results, edges = check_result_file(os.path.join(out, "cells", c["id"], name))
        md = results["metadata"]
        assert (md["model"], md["commandset"], md["hf_model"], md["feature_name"]) == (
            c["model"], c["commandset"], c["hf_model"], c["feature"])
        assert (md["num_sql_fields"], md["batch_size"], md["n_batches"], md["n_layers"], md["n_heads"]) == (
            2, 4, 3, 2, 3)
        assert md["n_positions"] == 6
        assert results["parameters"]["top_n_edges"] == c["top_n"]
        assert edges, c["id"]
        fig = sankey.figure_from_json(os.path.join(out, "cells", c["id"], name))
        assert len(fig.data[0].link.source) >= len(edges)


def test_notebook_written_json_plots(tmp_path):
    # A file as the notebook's collect_eap_results + save_eap_results wrote it (internal names
    # renamed, floats rounded), drawn again by `tinysql-eap plot`.
    results = {
        "metadata": {"source": "tinysql_EAP_JSON", "timestamp": "2025-01-31T12:00:00.123456", "model": 1,
                     "commandset": 1, "hf_model": "withmartian/sql_interp_bm1_cs1_experiment_1.10",
                     "feature_name": "EngTableName", "use_novel_names": False, "use_synonyms_field": False,
                     "use_synonyms_table": False, "num_sql_fields": 2, "batch_size": 30, "n_batches": 1,
                     "n_positions": 38, "n_layers": 2, "n_heads": 16},
        "parameters": {"top_n_edges": 10, "clean_logit_diff": 5.71851826, "corrupt_logit_diff": -2.11862183,
                       "clean_metric": 1.0, "corrupt_metric": 0.0},
        "edges": [{"from_edge": "l0.h3", "to_edge": "l1.mlp", "score": 0.21452188},
                  {"from_edge": "l0.mlp", "to_edge": "l1.mlp", "score": -0.13219832},
                  {"from_edge": "l1.h7", "to_edge": "l1.mlp", "score": 0.05120944}],
    }
    path = tmp_path / eap_file_name(1, 1, "EngTableName", False, False, False)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    r = run_teap("plot", str(path), "--out", str(tmp_path / "pics"), check=0)
    stem = path.name[:-len(".json")]
    html = tmp_path / "pics" / (stem + ".html")
    svg = tmp_path / "pics" / (stem + ".svg")
    assert str(html) in r.stdout and str(svg) in r.stdout
    import xml.etree.ElementTree as ET
    root = ET.parse(svg).getroot()
    links = [p for p in root.iter("{http://www.w3.org/2000/svg}path") if p.get("class") == "link"]
    assert len(links) == 3
    page = html.read_text()
    assert "l0.h3<br>0.215" in page and "arrangement" in page
    # Only svg.
    r = run_teap("plot", str(path), "--format", "svg", "--out", str(tmp_path / "only"), check=0)
    assert os.listdir(tmp_path / "only") == [stem + ".svg"]


def test_schema_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"metadata": {}, "parameters": {}, "edges": [{"from_edge": "l0.h1", "score": 1.0}]}))
    r = run_teap("plot", str(bad), check=2)
    assert r.stderr.count("\n") == 1 and f"{bad}: edges[0].to_edge: missing" in r.stderr
