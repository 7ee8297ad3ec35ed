"""metric_pairing = "notebook" against the notebook's own computation, end to end (issue 19).

The notebook (../shared/reference/tinysql_EAP_JSON-notebook.md) is re-run here in Python the way
its code runs, on the float64 reference forward pass of tests/model/reference.py and a tiny random
GPT-Neo checkpoint: its `ave_logit_diff`, its baselines loop, its `metric` whose `examples` default
is bound when the function is defined (to the last batch generated), its clean/corrupt metric loop,
the EAP fork's one-prompt-per-backward-pass scoring (hook_result and hook_mlp_out upstream,
hook_mlp_in downstream; difference clean - corrupt; sum over positions; divided by the prompt
count), `top_edges(n, abs_scores=True)` and its consistent-edge loop; then the JSON that
`collect_eap_results` would save. The prompts are the program's own (`tinysql-eap generate`), fed
to both sides.

That JSON is compared with what the program writes for the same cell: same edges in the same order,
scores, logit differences and metrics to float tolerance (the program runs in float32).

- test_attribute_writes_the_notebooks_json: `tinysql-eap attribute --metric-pairing notebook --json`.
- test_sweep_and_reduce_write_the_notebooks_json: a job run by `tinysql-eap run`, then `reduce`;
  it needs the sweep's score unit to pass the last batch's pairs to the scorer
  (runner::notebook_metric_pairs into eap::ScoreOptions::broadcast).
- test_batch_count_is_in_the_settings_hash: a notebook job rerun with another batch count into the
  same folder is refused; an own-paired one is not.

Environment (set by ctest): TEAP_BIN (tinysql-eap), TEAP_TOKENIZERS (folder of tokenizer folders).
"""

import glob
import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "model"))
import reference  # noqa: E402

BIN = os.environ.get("TEAP_BIN", "tinysql-eap")
TOKENIZERS = os.environ.get("TEAP_TOKENIZERS", os.path.join(HERE, "../../.cache/tokenizers"))

# The cell: the notebook's settings, scaled down (its batch size is 30, its top-n 10).
FEATURE = "EngTableName"
BATCH_SIZE = 5
N_BATCHES = 3
TOP_N = 10
SEED = 4


def run(cmd, check=True):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def sharpen(folder, qk=3.0, rest=2.0, embedding=4.0):
    """Rewrites a random checkpoint with larger weights (sharper attention, stronger MLPs, larger
    logits), so that corrupting one word moves the logit difference well above float32 rounding."""
    path = os.path.join(folder, "model.safetensors")
    tensors, _ = reference.read_safetensors_file(path)
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            t = t * qk
        elif name.endswith(("v_proj.weight", "out_proj.weight", "c_fc.weight", "c_proj.weight")):
            t = t * rest
        elif name.endswith("wte.weight"):
            t = t * embedding
        raw = t.to(torch.float32).numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + b"".join(blobs))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "model"
    run([BIN, "make-model", "--family", "gpt_neo", "--layers", "2", "--heads", "4", "--d-model", "64",
         "--d-mlp", "128", "--vocab-from", os.path.join(TOKENIZERS, "gpt2"), "--seed", "11", "--out", path])
    sharpen(str(path))
    return str(path)


def generated_batches(model_dir, batches=N_BATCHES, batch_size=BATCH_SIZE, seed=SEED):
    """The cell's prompts as the program draws them, in the notebook's `many_examples` layout."""
    out = run([BIN, "generate", "--tokenizer", model_dir, "--feature", FEATURE, "--batches", batches,
               "--batch-size", batch_size, "--seed", seed, "--format", "jsonl"]).stdout
    many_examples = [[] for _ in range(batches)]
    for line in out.splitlines():
        item = json.loads(line)
        many_examples[item["batch"]].append({
            "clean_tokens": item["clean_input_ids"],
            "corrupt_tokens": item["corrupt_input_ids"],
            "clean_tokenizer_index": item["clean_token_id"],
            "corrupt_tokenizer_index": item["corrupt_token_id"],
        })
    assert all(len(b) == batch_size for b in many_examples)
    return many_examples


# --- The EAP fork, on the reference model -------------------------------------------------------


class HookedGptNeo:
    """The reference's GPT-Neo forward pass with TransformerLens's hook points as the EAP fork used
    them (use_attn_result, use_hook_mlp_in): per-head results z_h W_O[h] (no bias), MLP outputs,
    and the MLP input as a separate copy of the residual stream whose gradient is kept."""

    def __init__(self, ref):
        assert ref.family == "gpt_neo"
        self.ref = ref
        self.n_layers, self.n_heads = ref.n_layers, ref.n_heads

    def __call__(self, ids, record=None):
        r = self.ref
        ids = torch.as_tensor(ids, dtype=torch.int64)
        B, P = ids.shape
        H, dh = r.n_heads, r.d_head
        x = r.wte[ids] + r.wpe[torch.arange(P)][None]
        if torch.is_grad_enabled():
            x.requires_grad_(True)  # the graph reaches every hook point; weights take no gradient
        for l in range(r.n_layers):
            L = r.layers[l]
            h = reference.layer_norm(x, L["ln1_w"], L["ln1_b"], r.eps)
            split = lambda t: t.view(B, P, H, dh).transpose(1, 2)  # noqa: E731
            q, k, v = split(reference.linear(h, L["q"])), split(reference.linear(h, L["k"])), split(reference.linear(h, L["v"]))
            allowed = reference.attention_mask(P, r.window if r.local_layers[l] else 0)
            z = reference.attend(q, k, v, 1.0, allowed).transpose(1, 2)  # [B,P,H,dh]
            w_o = L["o"].view(r.d_model, H, dh)  # out_proj.weight [d, H*dh]
            result = torch.einsum("bphk,dhk->bphd", z, w_o)  # blocks.l.attn.hook_result
            x = x + result.sum(2) + L["o_b"]
            mlp_in = x.clone()  # blocks.l.hook_mlp_in
            if mlp_in.requires_grad:
                mlp_in.retain_grad()
            hn = reference.layer_norm(mlp_in, L["ln2_w"], L["ln2_b"], r.eps)
            mlp_out = reference.linear(r.act(reference.linear(hn, L["fc"], L["fc_b"])), L["proj"], L["proj_b"])
            x = x + mlp_out
            if record is not None:
                record.append(dict(result=result, mlp_out=mlp_out, mlp_in=mlp_in))
        hidden = reference.layer_norm(x, r.lnf_w, r.lnf_b, r.eps)
        return hidden @ r.lm_head.t()


class EAPGraph:
    """The fork's graph for upstream_nodes=["mlp", "head"], downstream MLPs (downstream_heads = none):
    upstream head.l.0..H-1 then mlp.l per layer; downstream mlp.l; mlp.l reads everything up to and
    including layer l's heads."""

    def __init__(self, n_layers, n_heads):
        self.upstream_nodes, self.downstream_nodes = [], []
        self.before_mlp = {}
        for l in range(n_layers):
            self.upstream_nodes += [f"head.{l}.{h}" for h in range(n_heads)]
            self.before_mlp[l] = len(self.upstream_nodes)
            self.upstream_nodes.append(f"mlp.{l}")
        self.downstream_nodes = [f"mlp.{l}" for l in range(n_layers)]
        self.eap_scores = None

    def top_edges(self, n=1000, threshold=None, abs_scores=True):
        flat = self.eap_scores.flatten()
        top_scores, top_indices = torch.topk(flat.abs() if abs_scores else flat, k=n, dim=0)
        top_edges = []
        for abs_score, index in zip(top_scores, top_indices):
            if threshold is not None and abs_score < threshold:
                break
            u, d = np.unravel_index(int(index), self.eap_scores.shape)
            top_edges.append((self.upstream_nodes[u], self.downstream_nodes[d], self.eap_scores[u, d].item()))
        return top_edges


def EAP(model, clean_tokens, corrupted_tokens, metric, batch_size=1):
    """eap_wrapper.EAP: per prompt, a corrupt forward pass (upstream activations subtracted), a clean
    forward and backward pass of metric(logits) (activations added, then at each hook_mlp_in the
    differences of the earlier nodes dotted with its gradient, summed over positions)."""
    graph = EAPGraph(model.n_layers, model.n_heads)
    num_prompts = clean_tokens.shape[0]
    graph.eap_scores = torch.zeros(len(graph.upstream_nodes), len(graph.downstream_nodes), dtype=torch.float64)
    for idx in range(0, num_prompts, batch_size):
        with torch.no_grad():
            corrupt_rec = []
            model(corrupted_tokens[idx:idx + batch_size], corrupt_rec)
        clean_rec = []
        with torch.enable_grad():
            value = metric(model(clean_tokens[idx:idx + batch_size], clean_rec))
            value.backward()
        diff = []  # [batch, pos, n_upstream, d_model], clean - corrupt
        for l in range(model.n_layers):
            diff.append(clean_rec[l]["result"].detach() - corrupt_rec[l]["result"])
            diff.append((clean_rec[l]["mlp_out"].detach() - corrupt_rec[l]["mlp_out"]).unsqueeze(2))
        diff = torch.cat(diff, dim=2)
        for l in range(model.n_layers):
            grad = clean_rec[l]["mlp_in"].grad.unsqueeze(-2)  # [batch, pos, 1, d]
            # upstream_nodes_before_mlp_layer[l]: everything up to and including layer l's heads
            earlier = slice(0, graph.before_mlp[l])
            result = torch.matmul(diff[:, :, earlier], grad.transpose(-1, -2)).sum(dim=0).sum(dim=0)
            graph.eap_scores[earlier, l:l + 1] += result
    graph.eap_scores /= num_prompts
    return graph


# --- The notebook's cells, as written -----------------------------------------------------------


def notebook_cell(model, many_examples, top_n_edges=TOP_N, bind_metric_to_last_batch=True):
    """The notebook's "Calculate results" cells. bind_metric_to_last_batch=False scores each batch
    against its own pairs instead (what batch_broadcast computes), to show the binding matters."""

    def ave_logit_diff(logits, examples_prep, per_prompt=False):
        batch_size = logits.size(0)
        clean_logits = logits[range(batch_size), -1, [example["clean_tokenizer_index"] for example in examples_prep]]
        corrupt_logits = logits[range(batch_size), -1, [example["corrupt_tokenizer_index"] for example in examples_prep]]
        logit_diff = clean_logits - corrupt_logits
        return logit_diff if per_prompt else logit_diff.mean()

    all_clean_logit_diffs, all_corrupt_logit_diffs = [], []
    all_clean_metrics, all_corrupt_metrics = [], []
    with torch.no_grad():
        for examples_prep in many_examples:
            clean_logits = model(torch.tensor([example["clean_tokens"] for example in examples_prep]))
            corrupt_logits = model(torch.tensor([example["corrupt_tokens"] for example in examples_prep]))
            clean_logit_diff = ave_logit_diff(clean_logits, examples_prep).item()
            corrupt_logit_diff = ave_logit_diff(corrupt_logits, examples_prep).item()
            all_clean_logit_diffs.append(clean_logit_diff)
            all_corrupt_logit_diffs.append(corrupt_logit_diff)
    final_clean_logit_diff = sum(all_clean_logit_diffs) / len(all_clean_logit_diffs)
    final_corrupt_logit_diff = sum(all_corrupt_logit_diffs) / len(all_corrupt_logit_diffs)

    # `examples` is bound here, once: to the loop variable's last value, the last batch.
    def metric(logits, corrupted_logit_diff=final_corrupt_logit_diff, clean_logit_diff=final_clean_logit_diff,
               examples=examples_prep):
        patched_logit_diff = ave_logit_diff(logits, examples)
        return (patched_logit_diff - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)

    with torch.no_grad():
        for examples_prep in many_examples:
            clean_logits = model(torch.tensor([example["clean_tokens"] for example in examples_prep]))
            corrupt_logits = model(torch.tensor([example["corrupt_tokens"] for example in examples_prep]))
            clean_metric = metric(clean_logits, final_corrupt_logit_diff, final_clean_logit_diff, examples_prep)
            corrupt_metric = metric(corrupt_logits, final_corrupt_logit_diff, final_clean_logit_diff, examples_prep)
            all_clean_metrics.append(clean_metric)
            all_corrupt_metrics.append(corrupt_metric)

    edge_tracking = {}
    total_batches = len(many_examples)
    for batch_idx, examples_prep in enumerate(many_examples):
        clean_tokens = torch.tensor([example["clean_tokens"] for example in examples_prep])
        corrupt_tokens = torch.tensor([example["corrupt_tokens"] for example in examples_prep])
        if bind_metric_to_last_batch:
            batch_metric = metric
        else:
            batch_metric = lambda logits, ex=examples_prep: metric(logits, examples=ex)  # noqa: E731
        batch_graph = EAP(model, clean_tokens, corrupt_tokens, batch_metric)
        top_edges = batch_graph.top_edges(n=top_n_edges, abs_scores=True)
        for from_edge, to_edge, score in top_edges:
            edge_key = (from_edge, to_edge)
            if edge_key not in edge_tracking:
                edge_tracking[edge_key] = {"scores": [score], "appearances": 1}
            else:
                edge_tracking[edge_key]["scores"].append(score)
                edge_tracking[edge_key]["appearances"] += 1

    consistent_edges = []
    for edge_key, data in edge_tracking.items():
        if data["appearances"] == total_batches:
            from_edge, to_edge = edge_key
            consistent_edges.append((from_edge, to_edge, sum(data["scores"]) / len(data["scores"])))
    consistent_edges.sort(key=lambda x: abs(x[2]), reverse=True)

    def rename_edge(edge_name):
        if edge_name.startswith("mlp."):
            return f"l{edge_name.split('.')[1]}.mlp"
        parts = edge_name.split(".")
        return f"l{parts[1]}.h{parts[2]}" + (f".{parts[3]}" if len(parts) > 3 else "")

    # collect_eap_results' values (JSON: the last batch's logit differences and metrics).
    return {
        "metadata": {"n_batches": total_batches, "batch_size": len(many_examples[-1]),
                     "n_positions": clean_tokens.shape[1], "n_layers": model.n_layers, "n_heads": model.n_heads},
        "parameters": {"top_n_edges": top_n_edges, "clean_logit_diff": clean_logit_diff,
                       "corrupt_logit_diff": corrupt_logit_diff, "clean_metric": float(clean_metric),
                       "corrupt_metric": float(corrupt_metric)},
        "edges": [{"from_edge": rename_edge(f), "to_edge": rename_edge(t), "score": s} for f, t, s in consistent_edges],
        # not in its JSON; the program writes them under keys of its own
        "cell": {"clean_logit_diff": final_clean_logit_diff, "corrupt_logit_diff": final_corrupt_logit_diff,
                 "clean_metric": float(sum(all_clean_metrics) / len(all_clean_metrics)),
                 "corrupt_metric": float(sum(all_corrupt_metrics) / len(all_corrupt_metrics))},
    }


@pytest.fixture(scope="module")
def notebook(model_dir):
    model = HookedGptNeo(reference.Reference(model_dir))
    many = generated_batches(model_dir)
    return notebook_cell(model, many)


# --- Comparison ---------------------------------------------------------------------------------


def close(a, b, scale, what):
    # float32 program against float64 Python, and the JSON's rounding to 8 decimals.
    assert abs(a - b) <= 3e-5 * scale + 1e-8, f"{what}: program {a!r}, notebook {b!r}"


def compare(doc, nb):
    compare_values(doc, nb)
    compare_edges(doc, nb)


def compare_values(doc, nb):
    md, p = doc["metadata"], doc["parameters"]
    for k, v in nb["metadata"].items():
        assert md[k] == v, f"metadata.{k}: program {md[k]!r}, notebook {v!r}"
    assert md["feature_name"] == FEATURE and md["num_sql_fields"] == 2
    assert p["top_n_edges"] == TOP_N
    ld_scale = max(1.0, abs(nb["parameters"]["clean_logit_diff"]), abs(nb["parameters"]["corrupt_logit_diff"]))
    for k in ("clean_logit_diff", "corrupt_logit_diff"):
        close(p[k], nb["parameters"][k], ld_scale, f"parameters.{k}")
        close(p["cell_" + k], nb["cell"][k], ld_scale, f"parameters.cell_{k}")
    m_scale = max(1.0, abs(nb["parameters"]["clean_metric"]))
    for k in ("clean_metric", "corrupt_metric"):
        close(p[k], nb["parameters"][k], m_scale, f"parameters.{k}")
        close(p["cell_" + k], nb["cell"][k], m_scale, f"parameters.cell_{k}")
    assert p["metric_pairing"] == "notebook" and p["downstream_heads"] == "none"


def compare_edges(doc, nb):
    ours = [(e["from_edge"], e["to_edge"]) for e in doc["edges"]]
    theirs = [(e["from_edge"], e["to_edge"]) for e in nb["edges"]]
    assert ours == theirs, f"consistent edges differ:\nprogram  {ours}\nnotebook {theirs}"
    s_scale = max(abs(e["score"]) for e in nb["edges"])
    for e, f in zip(doc["edges"], nb["edges"]):
        close(e["score"], f["score"], s_scale, f"score {e['from_edge']} -> {e['to_edge']}")


def test_the_notebook_cell_is_informative(model_dir, notebook):
    """The cell has consistent edges, and binding `examples` to the last batch changes the scores
    beyond the tolerance (otherwise the comparisons below could not tell the modes apart)."""
    assert len(notebook["edges"]) >= 3, notebook["edges"]
    own = notebook_cell(HookedGptNeo(reference.Reference(model_dir)), generated_batches(model_dir),
                        bind_metric_to_last_batch=False)
    scale = max(abs(e["score"]) for e in notebook["edges"])
    a = {(e["from_edge"], e["to_edge"]): e["score"] for e in notebook["edges"]}
    b = {(e["from_edge"], e["to_edge"]): e["score"] for e in own["edges"]}
    moved = max([abs(a[k] - b[k]) for k in a if k in b] + [scale if set(a) != set(b) else 0.0])
    assert moved > 1e-2 * scale, "the last-batch binding does not change this cell: choose another seed"


def attribute(model_dir, out_json, pairing):
    return run([BIN, "attribute", "--model", model_dir, "--feature", FEATURE, "--batches", N_BATCHES,
                "--batch-size", BATCH_SIZE, "--seed", SEED, "--top-n", TOP_N, "--downstream-heads", "none",
                "--metric-pairing", pairing, "--threads", 1, "--model-number", 1, "--commandset", 1,
                "--json", out_json])


def test_attribute_writes_the_notebooks_json(model_dir, notebook, tmp_path):
    out = tmp_path / "nb.json"
    attribute(model_dir, out, "notebook")
    compare(json.loads(out.read_text()), notebook)
    # batch_broadcast scores each batch against its own pairs: not the notebook's JSON.
    bb = tmp_path / "bb.json"
    attribute(model_dir, bb, "batch_broadcast")
    with pytest.raises(AssertionError):
        compare_edges(json.loads(bb.read_text()), notebook)


def write_job(path, output, model_dir, batches=N_BATCHES, pairing="notebook"):
    path.write_text(f"""output = "{output}"

[grid]
models = [1]
commandsets = [1]
features = ["{FEATURE}"]

[settings]
batch_size = {BATCH_SIZE}
batches = {batches}
top_n = {TOP_N}
seed = {SEED}
threads = 1
downstream_heads = "none"
metric_pairing = "{pairing}"

[models.BM1]
cs1 = "{model_dir}"
tokenizer = "{model_dir}"
""")
    return path


def test_sweep_and_reduce_write_the_notebooks_json(model_dir, notebook, tmp_path):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", out, model_dir)
    r = run([BIN, "run", job], check=False)
    assert r.returncode == 0 and not glob.glob(str(out / "failed" / "*")), \
        f"run exited {r.returncode}; failed units: {[open(f).read() for f in glob.glob(str(out / 'failed' / '*'))]}\n{r.stderr}"
    run([BIN, "reduce", out])
    files = glob.glob(str(out / "cells" / "*" / "eap_results.*.json"))
    assert len(files) == 1, files
    compare(json.load(open(files[0])), notebook)


def test_batch_count_is_in_the_settings_hash(model_dir, tmp_path):
    for pairing, refused in (("notebook", True), ("own", False)):
        out = tmp_path / f"out-{pairing}"
        run([BIN, "run", write_job(tmp_path / f"{pairing}1.toml", out, model_dir, batches=1, pairing=pairing)],
            check=False)
        manifest = json.load(open(out / "sweep.json"))
        assert ("batches=1" in manifest["cells"][0]["settings"]) == refused, manifest["cells"][0]["settings"]
        more = write_job(tmp_path / f"{pairing}2.toml", out, model_dir, batches=2, pairing=pairing)
        r = run([BIN, "run", more, "--dry-run"], check=False)
        if refused:
            assert r.returncode == 2, r
            assert "this folder holds results of other settings" in r.stderr and "batches '1' -> '2'" in r.stderr, r.stderr
        else:
            assert r.returncode == 0, r.stderr
