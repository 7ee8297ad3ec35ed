#include "eap/graph.hpp"

#include "util/error.hpp"

namespace teap::eap {

int Graph::n_edges() const {
  int n = 0;
  for (unsigned char v : valid) n += v;
  return n;
}

Graph make_graph(int n_layers, int n_heads, const GraphOptions& options) {
  Graph g;
  g.n_layers = n_layers;
  g.n_heads = n_heads;
  g.options = options;
  std::vector<int> up_layer, down_layer;  // layer of each node; -1 input, n_layers logits
  std::vector<bool> up_is_head, down_is_mlp;
  for (int l = 0; l < n_layers; ++l) {
    const std::string L = std::to_string(l);
    for (int h = 0; h < n_heads; ++h) {
      g.upstream.push_back("head." + L + "." + std::to_string(h));
      up_layer.push_back(l);
      up_is_head.push_back(true);
    }
    g.upstream.push_back("mlp." + L);
    up_layer.push_back(l);
    up_is_head.push_back(false);
    if (g.heads_down())
      for (const char* x : {"q", "k", "v"})
        for (int h = 0; h < n_heads; ++h) {
          g.downstream.push_back("head." + L + "." + std::to_string(h) + "." + x);
          down_layer.push_back(l);
          down_is_mlp.push_back(false);
        }
    g.downstream.push_back("mlp." + L);
    down_layer.push_back(l);
    down_is_mlp.push_back(true);
  }
  if (options.input_node) {
    g.upstream.push_back("input");
    up_layer.push_back(-1);
    up_is_head.push_back(false);
  }
  if (options.logits_node) {
    g.downstream.push_back("logits");
    down_layer.push_back(n_layers);
    down_is_mlp.push_back(false);
  }
  g.valid.assign(g.upstream.size() * g.downstream.size(), 0);
  for (size_t u = 0; u < g.upstream.size(); ++u)
    for (size_t d = 0; d < g.downstream.size(); ++d) {
      const int a = up_layer[u], b = down_layer[d];
      // Earlier layers feed later ones; a layer's heads also feed its own MLP.
      const bool edge = a < b || (a == b && up_is_head[u] && down_is_mlp[d]);
      g.valid[u * g.downstream.size() + d] = edge ? 1 : 0;
    }
  return g;
}

std::string display_name(const std::string& node) {
  // head.L.H[.x] -> lL.hH[.x]; mlp.L -> lL.mlp; input and logits unchanged.
  if (node.rfind("head.", 0) == 0) {
    const size_t a = node.find('.', 5);
    const size_t b = node.find('.', a + 1);
    std::string s = "l" + node.substr(5, a - 5) + ".h" + node.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    if (b != std::string::npos) s += node.substr(b);
    return s;
  }
  if (node.rfind("mlp.", 0) == 0) return "l" + node.substr(4) + ".mlp";
  return node;
}

DownstreamHeads parse_downstream_heads(const std::string& s, const std::string& where) {
  if (s == "qkv") return DownstreamHeads::Qkv;
  if (s == "none") return DownstreamHeads::None;
  fail_input(where, "downstream_heads '" + s + "' is not one of qkv, none");
}

}  // namespace teap::eap
