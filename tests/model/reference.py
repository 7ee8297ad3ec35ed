#!/usr/bin/python3
"""An independent reference forward pass for the TinySQL model families, in float64.

Written straight from the Hugging Face formulas (modeling_gpt_neo.py, modeling_qwen2.py,
modeling_llama.py and the llama3 rope scaling of modeling_rope_utils.py) with nothing but
torch and numpy: it reads config.json and the safetensors files itself and shares no code with
the C++ side. Used by test_reference.py; also a command line twin of dump_logits:

    reference.py MODEL_DIR OUT.bin --ids "1 2 3,4 5 6" [--trim-vocab N]

writes float32 little-endian logits [B,P,V] to OUT.bin and {"shape": [B,P,V]} to OUT.bin.json.

Everything is computed in float64 from the stored weights (BF16/F16/F32 widened exactly), so the
reference is the mathematical value that both Hugging Face's float32 and the C++ float32 forward
pass approximate.
"""

import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# safetensors: 8-byte little-endian header length, a JSON header, then the raw little-endian data


def _decode(raw, dtype, shape, where):
    n = int(np.prod(shape)) if shape else 1
    if dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4", count=n).astype(np.float64)
    elif dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2", count=n).astype(np.float64)
    elif dtype == "BF16":
        # bfloat16 is the upper half of a float32: widen the 16 bits and reinterpret.
        bits = np.frombuffer(raw, dtype="<u2", count=n).astype(np.uint32) << 16
        arr = bits.view(np.float32).astype(np.float64)
    elif dtype == "F64":
        arr = np.frombuffer(raw, dtype="<f8", count=n).astype(np.float64)
    else:
        raise ValueError(f"{where}: unsupported dtype {dtype}")
    return torch.from_numpy(arr.copy()).reshape(shape)


_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}


def read_safetensors_file(path):
    """name -> float64 tensor, and name -> stored dtype."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} past the end of the file")
    header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    data = blob[8 + n :]
    tensors, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
        numel = int(np.prod(shape)) if shape else 1
        if dtype not in _ITEMSIZE:
            raise ValueError(f"{path}: {name}: unsupported dtype {dtype}")
        if not (0 <= begin <= end <= len(data)) or end - begin != numel * _ITEMSIZE[dtype]:
            raise ValueError(f"{path}: {name}: bad data_offsets {begin}..{end}")
        tensors[name] = _decode(data[begin:end], dtype, shape, f"{path}: {name}")
        dtypes[name] = dtype
    return tensors, dtypes


def read_weights(folder):
    """All tensors of a model folder: model.safetensors, or the shards its index names."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = sorted(set(weight_map.values()))
    else:
        weight_map, files = None, ["model.safetensors"]
    tensors, dtypes = {}, {}
    for name in files:
        t, d = read_safetensors_file(os.path.join(folder, name))
        for k in t:
            if k in tensors:
                raise ValueError(f"{folder}: tensor {k} stored twice")
            if weight_map is not None and weight_map.get(k) != name:
                raise ValueError(f"{folder}: {k} is in {name}, the index says {weight_map.get(k)}")
        tensors.update(t)
        dtypes.update(d)
    if weight_map is not None and set(weight_map) != set(tensors):
        raise ValueError(f"{folder}: the index and the shards name different tensors")
    return tensors, dtypes


# ---------------------------------------------------------------------------------------------
# The building blocks, as Hugging Face writes them


def layer_norm(x, w, b, eps):
    # nn.LayerNorm: biased variance over the last dimension.
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def rms_norm(x, w, eps):
    # Qwen2RMSNorm / LlamaRMSNorm: x * rsqrt(mean(x^2) + eps), then weight * (cast back) x.
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def gelu_new(x):
    # NewGELUActivation: the tanh approximation.
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def silu(x):
    return x * torch.sigmoid(x)


ACTIVATIONS = {
    "gelu_new": gelu_new,
    "silu": silu,
    "swish": silu,
    "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
    "relu": torch.relu,
}


def linear(x, w, b=None):
    y = x @ w.t()
    return y if b is None else y + b


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def default_inv_freq(base, dim):
    # 1 / base^(2i/dim), i = 0 .. dim/2-1
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def llama3_inv_freq(inv_freq, scaling):
    # transformers.modeling_rope_utils._compute_llama3_parameters
    factor = float(scaling["factor"])
    low_freq_factor = float(scaling["low_freq_factor"])
    high_freq_factor = float(scaling["high_freq_factor"])
    old_context_len = float(scaling["original_max_position_embeddings"])
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed_inv_freq = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
    is_medium_freq = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium_freq, smoothed_inv_freq, inv_freq_llama)


def attention_mask(P, window):
    """[P,P] boolean: query i may see key j. Causal; with a window, also i - j < window."""
    i = torch.arange(P).unsqueeze(1)
    j = torch.arange(P).unsqueeze(0)
    allowed = j <= i
    if window:
        allowed = allowed & (i - j < window)
    return allowed


def attend(q, k, v, scale, allowed):
    """q [B,H,P,d], k/v [B,H,P,d] (already one per query head) -> z [B,H,P,d]."""
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return probs @ v


# ---------------------------------------------------------------------------------------------
# The model


class Reference:
    """A model folder read into float64 tensors, with one forward pass per family.

    The attributes that decide the numerics (local_layers, window, inv_freq, weights) are plain
    fields, so a test can change one and check that the logits move.
    """

    def __init__(self, folder, trim_vocab=0):
        with open(os.path.join(folder, "config.json")) as f:
            self.config = c = json.load(f)
        self.family = c["model_type"]
        self.w, self.stored_dtypes = read_weights(folder)
        self._used = set()
        self.kv_tiled = False
        if self.family == "gpt_neo":
            self._init_gpt_neo(c)
        elif self.family in ("qwen2", "llama"):
            self._init_llama_like(c)
        else:
            raise ValueError(f"{folder}/config.json: unsupported model_type {self.family}")
        unused = set(self.w) - self._used
        if unused:
            raise ValueError(f"{folder}: tensors the {self.family} architecture does not use: {sorted(unused)}")
        self.vocab_size = self.wte.shape[0]
        if trim_vocab:
            if trim_vocab > self.vocab_size:
                raise ValueError(f"cannot trim the vocabulary {self.vocab_size} to {trim_vocab}")
            self.wte = self.wte[:trim_vocab]
            self.lm_head = self.lm_head[:trim_vocab]
            self.vocab_size = trim_vocab

    def _get(self, name, shape=None, required=True):
        t = self.w.get(name)
        if t is None:
            if required:
                raise ValueError(f"missing tensor {name}")
            return None
        if shape is not None and list(t.shape) != list(shape):
            raise ValueError(f"{name}: shape {list(t.shape)}, expected {list(shape)}")
        self._used.add(name)
        return t

    # --- GPT-Neo ------------------------------------------------------------------------------

    def _init_gpt_neo(self, c):
        self.n_layers = c["num_layers"]
        self.n_heads = self.n_kv_heads = c["num_heads"]
        self.d_model = d = c["hidden_size"]
        self.d_head = d // self.n_heads
        self.d_mlp = c.get("intermediate_size") or 4 * d
        self.eps = c.get("layer_norm_epsilon", 1e-5)
        self.act = ACTIVATIONS[c.get("activation_function", "gelu_new")]
        if "attention_layers" in c:
            layers = list(c["attention_layers"])
        else:  # GPTNeoConfig.expand_attention_types_params
            layers = [t for pattern, n in c["attention_types"] for _ in range(n) for t in pattern]
        if len(layers) != self.n_layers:
            raise ValueError("attention_layers does not have num_layers entries")
        self.local_layers = [t == "local" for t in layers]
        self.window = c.get("window_size", 256)
        V = c["vocab_size"]
        pre = "transformer."
        self.wte = self._get(pre + "wte.weight", [V, d])
        self.wpe = self._get(pre + "wpe.weight", [c.get("max_position_embeddings", 2048), d])
        self.layers = []
        for l in range(self.n_layers):
            p = f"{pre}h.{l}."
            a = p + "attn.attention."
            self.layers.append(
                dict(
                    ln1_w=self._get(p + "ln_1.weight", [d]),
                    ln1_b=self._get(p + "ln_1.bias", [d]),
                    q=self._get(a + "q_proj.weight", [d, d]),
                    k=self._get(a + "k_proj.weight", [d, d]),
                    v=self._get(a + "v_proj.weight", [d, d]),
                    o=self._get(a + "out_proj.weight", [d, d]),
                    o_b=self._get(a + "out_proj.bias", [d]),
                    ln2_w=self._get(p + "ln_2.weight", [d]),
                    ln2_b=self._get(p + "ln_2.bias", [d]),
                    fc=self._get(p + "mlp.c_fc.weight", [self.d_mlp, d]),
                    fc_b=self._get(p + "mlp.c_fc.bias", [self.d_mlp]),
                    proj=self._get(p + "mlp.c_proj.weight", [d, self.d_mlp]),
                    proj_b=self._get(p + "mlp.c_proj.bias", [d]),
                )
            )
        self.lnf_w = self._get(pre + "ln_f.weight", [d])
        self.lnf_b = self._get(pre + "ln_f.bias", [d])
        lm = self._get("lm_head.weight", [V, d], required=False)
        if lm is None and c.get("tie_word_embeddings", True) is False:
            raise ValueError("tie_word_embeddings is false but there is no lm_head.weight")
        self.lm_head = self.wte if lm is None else lm

    def _gpt_neo_layer(self, l, x, trace):
        L = self.layers[l]
        B, P, _ = x.shape
        H, dh = self.n_heads, self.d_head
        h = layer_norm(x, L["ln1_w"], L["ln1_b"], self.eps)
        split = lambda t: t.view(B, P, H, dh).transpose(1, 2)  # noqa: E731
        q, k, v = split(linear(h, L["q"])), split(linear(h, L["k"])), split(linear(h, L["v"]))
        allowed = attention_mask(P, self.window if self.local_layers[l] else 0)
        z = attend(q, k, v, 1.0, allowed)  # GPT-Neo does not scale by 1/sqrt(d_head)
        attn_out = linear(z.transpose(1, 2).reshape(B, P, H * dh), L["o"], L["o_b"])
        x = x + attn_out
        m = linear(self.act(linear(layer_norm(x, L["ln2_w"], L["ln2_b"], self.eps), L["fc"], L["fc_b"])),
                   L["proj"], L["proj_b"])
        if trace is not None:
            trace.append(dict(z=z.transpose(1, 2), attn_out=attn_out, resid_mid=x, mlp_out=m))
        return x + m

    # --- Qwen2 and Llama ----------------------------------------------------------------------

    def _init_llama_like(self, c):
        qwen = self.family == "qwen2"
        self.n_layers = c["num_hidden_layers"]
        self.n_heads = c["num_attention_heads"]
        self.n_kv_heads = c.get("num_key_value_heads") or self.n_heads
        self.d_model = d = c["hidden_size"]
        self.d_head = c.get("head_dim") or d // self.n_heads
        self.d_mlp = c["intermediate_size"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.act = ACTIVATIONS[c.get("hidden_act", "silu")]
        if self.n_heads % self.n_kv_heads:
            raise ValueError("num_key_value_heads does not divide num_attention_heads")
        # Sliding window (qwen2 only): layer_types, else layers >= max_window_layers when enabled.
        self.window = 0
        self.local_layers = [False] * self.n_layers
        if qwen and c.get("use_sliding_window") and c.get("sliding_window"):
            self.window = c["sliding_window"]
            if "layer_types" in c:
                self.local_layers = [t == "sliding_attention" for t in c["layer_types"]]
            else:
                mwl = c.get("max_window_layers", self.n_layers)
                self.local_layers = [l >= mwl for l in range(self.n_layers)]
        qkv_bias = True if qwen else bool(c.get("attention_bias", False))
        o_bias = False if qwen else bool(c.get("attention_bias", False))
        mlp_bias = False if qwen else bool(c.get("mlp_bias", False))
        # Rotary frequencies over the whole head (partial_rotary_factor 1).
        self.inv_freq = default_inv_freq(float(c.get("rope_theta", 10000.0)), self.d_head)
        scaling = c.get("rope_scaling")
        if scaling:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind == "llama3":
                self.inv_freq = llama3_inv_freq(self.inv_freq, scaling)
            elif kind != "default":
                raise ValueError(f"rope_scaling type {kind} is not implemented here")
        V = c["vocab_size"]
        Hq, Hkv, dh, f = self.n_heads * self.d_head, self.n_kv_heads * self.d_head, self.d_head, self.d_mlp
        del dh
        self.wte = self._get("model.embed_tokens.weight", [V, d])
        self.layers = []
        for l in range(self.n_layers):
            p = f"model.layers.{l}."
            a = p + "self_attn."
            m = p + "mlp."
            opt = lambda name, shape, on: self._get(name, shape) if on else None  # noqa: E731
            self.layers.append(
                dict(
                    ln1_w=self._get(p + "input_layernorm.weight", [d]),
                    q=self._get(a + "q_proj.weight", [Hq, d]),
                    k=self._get(a + "k_proj.weight", [Hkv, d]),
                    v=self._get(a + "v_proj.weight", [Hkv, d]),
                    q_b=opt(a + "q_proj.bias", [Hq], qkv_bias),
                    k_b=opt(a + "k_proj.bias", [Hkv], qkv_bias),
                    v_b=opt(a + "v_proj.bias", [Hkv], qkv_bias),
                    o=self._get(a + "o_proj.weight", [d, Hq]),
                    o_b=opt(a + "o_proj.bias", [d], o_bias),
                    ln2_w=self._get(p + "post_attention_layernorm.weight", [d]),
                    gate=self._get(m + "gate_proj.weight", [f, d]),
                    up=self._get(m + "up_proj.weight", [f, d]),
                    down=self._get(m + "down_proj.weight", [d, f]),
                    gate_b=opt(m + "gate_proj.bias", [f], mlp_bias),
                    up_b=opt(m + "up_proj.bias", [f], mlp_bias),
                    down_b=opt(m + "down_proj.bias", [d], mlp_bias),
                )
            )
        self.lnf_w = self._get("model.norm.weight", [d])
        if c.get("tie_word_embeddings", False):
            # Tied: the checkpoint's lm_head.weight (if any) is the embedding itself.
            self._used.add("lm_head.weight")
            self.lm_head = self.wte
        else:
            self.lm_head = self._get("lm_head.weight", [V, d])

    def rotary(self, P):
        """cos, sin [P, d_head] (LlamaRotaryEmbedding: emb = cat(freqs, freqs))."""
        pos = torch.arange(P, dtype=torch.float64)
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos(), emb.sin()

    def _llama_layer(self, l, x, trace):
        L = self.layers[l]
        B, P, _ = x.shape
        H, Hkv, dh = self.n_heads, self.n_kv_heads, self.d_head
        h = rms_norm(x, L["ln1_w"], self.eps)
        q = linear(h, L["q"], L["q_b"]).view(B, P, H, dh).transpose(1, 2)
        k = linear(h, L["k"], L["k_b"]).view(B, P, Hkv, dh).transpose(1, 2)
        v = linear(h, L["v"], L["v_b"]).view(B, P, Hkv, dh).transpose(1, 2)
        cos, sin = self.rotary(P)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        # repeat_kv: key/value head j serves query heads j*n_rep .. (j+1)*n_rep-1.
        # (kv_tiled, a test knob, makes query head h use key/value head h % Hkv instead.)
        n_rep = H // Hkv
        if self.kv_tiled:
            k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
        else:
            k, v = k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1)
        allowed = attention_mask(P, self.window if self.local_layers[l] else 0)
        z = attend(q, k, v, dh ** -0.5, allowed)
        attn_out = linear(z.transpose(1, 2).reshape(B, P, H * dh), L["o"], L["o_b"])
        x = x + attn_out
        h2 = rms_norm(x, L["ln2_w"], self.eps)
        m = linear(self.act(linear(h2, L["gate"], L["gate_b"])) * linear(h2, L["up"], L["up_b"]),
                   L["down"], L["down_b"])
        if trace is not None:
            trace.append(dict(z=z.transpose(1, 2), attn_out=attn_out, resid_mid=x, mlp_out=m))
        return x + m

    # --- The whole pass -----------------------------------------------------------------------

    def forward(self, ids, trace=None):
        """ids [B,P] int64 -> full logits [B,P,V] float64. `trace`, a list, receives per-layer
        intermediates (z, attn_out, resid_mid, mlp_out) and a final entry with the embedding and
        the normed final residual."""
        ids = torch.as_tensor(ids, dtype=torch.int64)
        B, P = ids.shape
        if int(ids.max()) >= self.vocab_size or int(ids.min()) < 0:
            raise ValueError("token id outside the vocabulary")
        with torch.no_grad():
            x = self.wte[ids]
            if self.family == "gpt_neo":
                x = x + self.wpe[torch.arange(P)][None]
            embed = x
            for l in range(self.n_layers):
                x = self._gpt_neo_layer(l, x, trace) if self.family == "gpt_neo" else self._llama_layer(l, x, trace)
            if self.family == "gpt_neo":
                hidden = layer_norm(x, self.lnf_w, self.lnf_b, self.eps)
            else:
                hidden = rms_norm(x, self.lnf_w, self.eps)
            if trace is not None:
                trace.append(dict(embed=embed, resid_final=x, hidden=hidden))
            return hidden @ self.lm_head.t()


def parse_ids(text):
    rows = [[int(t) for t in row.split()] for row in text.split(",")]
    if not rows or any(len(r) != len(rows[0]) or not r for r in rows):
        raise ValueError("--ids: rows must be non-empty and of equal length")
    return torch.tensor(rows, dtype=torch.int64)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--trim-vocab", type=int, default=0)
    args = ap.parse_args(argv)
    ref = Reference(args.model_dir, trim_vocab=args.trim_vocab)
    logits = ref.forward(parse_ids(args.ids))
    logits.to(torch.float32).numpy().astype("<f4").tofile(args.out)
    with open(args.out + ".json", "w") as f:
        json.dump({"shape": list(logits.shape), "dtype": "float32"}, f)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
