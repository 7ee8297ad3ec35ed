// Owns the attribution graph of a model shape: upstream and downstream node lists in the
// notebook's index order, their names, and which (upstream, downstream) pairs are edges.
#pragma once

#include <string>
#include <vector>

namespace teap::eap {

enum class DownstreamHeads { Qkv, None };  // "qkv": head Q/K/V inputs are destinations; "none": MLPs only

struct GraphOptions {
  DownstreamHeads downstream_heads = DownstreamHeads::Qkv;
  bool input_node = false;   // upstream `input`: the embedding entering layer 0
  bool logits_node = false;  // downstream `logits`: the residual stream before the final norm
};

struct Graph {
  int n_layers = 0, n_heads = 0;
  GraphOptions options;
  std::vector<std::string> upstream;    // [n_upstream] head.l.h, mlp.l, then input
  std::vector<std::string> downstream;  // [n_downstream] head.l.h.q/k/v, mlp.l, then logits
  std::vector<unsigned char> valid;     // [n_upstream * n_downstream] row-major, 1 = edge

  int n_upstream() const { return static_cast<int>(upstream.size()); }
  int n_downstream() const { return static_cast<int>(downstream.size()); }
  bool is_edge(int u, int d) const { return valid[static_cast<size_t>(u) * downstream.size() + d]; }
  int n_edges() const;

  // Index rules (spec eap.md): head.l.h = l*(H+1)+h, mlp.l = l*(H+1)+H, input last.
  int head_up(int l, int h) const { return l * (n_heads + 1) + h; }
  int mlp_up(int l) const { return l * (n_heads + 1) + n_heads; }
  int input_up() const { return options.input_node ? n_layers * (n_heads + 1) : -1; }
  // Downstream: with qkv, base = l*(3H+1), q = base+h, k = base+H+h, v = base+2H+h, mlp = base+3H;
  // with none, mlp.l = l. logits last. -1 where the node does not exist.
  int q_down(int l, int h) const { return heads_down() ? l * (3 * n_heads + 1) + h : -1; }
  int k_down(int l, int h) const { return heads_down() ? l * (3 * n_heads + 1) + n_heads + h : -1; }
  int v_down(int l, int h) const { return heads_down() ? l * (3 * n_heads + 1) + 2 * n_heads + h : -1; }
  int mlp_down(int l) const { return heads_down() ? l * (3 * n_heads + 1) + 3 * n_heads : l; }
  int logits_down() const { return options.logits_node ? n_layers * per_layer_down() : -1; }
  int per_layer_down() const { return heads_down() ? 3 * n_heads + 1 : 1; }
  bool heads_down() const { return options.downstream_heads == DownstreamHeads::Qkv; }
};

Graph make_graph(int n_layers, int n_heads, const GraphOptions& options = {});

// "head.1.3.q" -> "l1.h3.q", "mlp.0" -> "l0.mlp" (the notebook's names in JSON and pictures).
std::string display_name(const std::string& node);

// Parses "qkv" / "none"; anything else is an InputError naming `where`.
DownstreamHeads parse_downstream_heads(const std::string& s, const std::string& where);

}  // namespace teap::eap
