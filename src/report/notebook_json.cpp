#include "report/notebook_json.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <stdexcept>
#include <sys/time.h>

#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::report {

using ojson = nlohmann::ordered_json;

double python_round8(double x) {
  if (!std::isfinite(x)) return x;
  // glibc's printf rounds the exact binary value half-even, as Python's dtoa mode 3 does; strtod
  // then returns the nearest double, as Python's round does.
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.8f", x);
  double r = std::strtod(buf, nullptr);
  if (r == 0 && std::signbit(x)) r = -0.0;  // round(-1e-12, 8) is -0.0
  return r;
}

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, res.ptr);  // "-1.2345e-05": shortest round-trip digits
  std::string sign;
  if (sci[0] == '-') {
    sign = "-";
    sci.erase(0, 1);
  }
  const size_t epos = sci.find('e');
  std::string digits;
  for (size_t i = 0; i < epos; ++i)
    if (sci[i] != '.') digits += sci[i];
  const int exp10 = std::atoi(sci.c_str() + epos + 1);
  const int decpt = exp10 + 1;  // digits d1d2... = 0.d1d2... x 10^decpt
  const int n = static_cast<int>(digits.size());
  std::string out;
  if (decpt <= -4 || decpt > 16) {  // Python's repr switches to exponent notation here
    out = digits.substr(0, 1);
    if (n > 1) out += "." + digits.substr(1);
    const int e = decpt - 1;
    char eb[32];
    std::snprintf(eb, sizeof eb, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    out += eb;
  } else if (decpt <= 0) {
    out = "0." + std::string(-decpt, '0') + digits;
  } else if (decpt >= n) {
    out = digits + std::string(decpt - n, '0') + ".0";
  } else {
    out = digits.substr(0, decpt) + "." + digits.substr(decpt);
  }
  return sign + out;
}

namespace {

void append_python_string(std::string& out, const std::string& s) {
  // json.dumps(ensure_ascii=True): escapes ", \, control characters and everything outside
  // printable ASCII as \uXXXX (lowercase hex, surrogate pairs beyond the BMP).
  auto u = [&](unsigned v) {
    char b[16];
    std::snprintf(b, sizeof b, "\\u%04x", v);
    out += b;
  };
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          if (c < 0x20 || c == 0x7f) u(c);
          else out += static_cast<char>(c);
      }
      ++i;
      continue;
    }
    int len = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    unsigned cp = len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    bool ok = len > 0 && i + len <= s.size();
    for (int k = 1; ok && k < len; ++k) {
      const unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) ok = false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if (!ok) throw std::invalid_argument("string is not valid UTF-8");
    if (cp >= 0x10000) {
      cp -= 0x10000;
      u(0xd800 | (cp >> 10));
      u(0xdc00 | (cp & 0x3ff));
    } else {
      u(cp);
    }
    i += len;
  }
  out += '"';
}

void dump_value(std::string& out, const ojson& v, int indent, int depth) {
  const std::string pad_in(static_cast<size_t>(indent) * (depth + 1), ' ');
  const std::string pad_out(static_cast<size_t>(indent) * depth, ' ');
  switch (v.type()) {
    case ojson::value_t::object: {
      if (v.empty()) {
        out += "{}";
        return;
      }
      out += "{\n";
      bool first = true;
      for (auto it = v.begin(); it != v.end(); ++it) {
        if (!first) out += ",\n";
        first = false;
        out += pad_in;
        append_python_string(out, it.key());
        out += ": ";
        dump_value(out, it.value(), indent, depth + 1);
      }
      out += "\n" + pad_out + "}";
      return;
    }
    case ojson::value_t::array: {
      if (v.empty()) {
        out += "[]";
        return;
      }
      out += "[\n";
      for (size_t i = 0; i < v.size(); ++i) {
        if (i) out += ",\n";
        out += pad_in;
        dump_value(out, v[i], indent, depth + 1);
      }
      out += "\n" + pad_out + "]";
      return;
    }
    case ojson::value_t::string: append_python_string(out, v.get_ref<const std::string&>()); return;
    case ojson::value_t::boolean: out += v.get<bool>() ? "true" : "false"; return;
    case ojson::value_t::null: out += "null"; return;
    case ojson::value_t::number_integer: out += std::to_string(v.get<int64_t>()); return;
    case ojson::value_t::number_unsigned: out += std::to_string(v.get<uint64_t>()); return;
    case ojson::value_t::number_float: {
      const double x = v.get<double>();
      if (!std::isfinite(x)) throw std::invalid_argument("result JSON: a float is not finite");
      out += python_float_repr(python_round8(x));
      return;
    }
    default: throw std::invalid_argument("result JSON: unsupported value type");
  }
}

void check_finite(double x, const char* key) {
  if (!std::isfinite(x)) throw std::invalid_argument(std::string("result JSON: ") + key + " is not finite");
}

const char* py_bool(bool b) { return b ? "True" : "False"; }

}  // namespace

std::string dump_python_json(const ojson& doc, int indent) {
  std::string out;
  dump_value(out, doc, indent, 0);
  return out;
}

std::string iso_timestamp_now() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  std::tm tm{};
  const time_t t = tv.tv_sec;
  localtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::string s = buf;
  if (tv.tv_usec) {
    std::snprintf(buf, sizeof buf, ".%06ld", static_cast<long>(tv.tv_usec));
    s += buf;
  }
  return s;
}

ojson to_json(const Result& r) {
  const ResultMetadata& m = r.metadata;
  const ResultParameters& p = r.parameters;
  ojson doc = ojson::object();
  ojson md = ojson::object();
  md["source"] = m.source;
  md["timestamp"] = m.timestamp.empty() ? iso_timestamp_now() : m.timestamp;
  md["model"] = m.model;
  md["commandset"] = m.commandset;
  md["hf_model"] = m.hf_model;
  md["feature_name"] = m.feature_name;
  md["use_novel_names"] = m.use_novel_names;
  md["use_synonyms_field"] = m.use_synonyms_field;
  md["use_synonyms_table"] = m.use_synonyms_table;
  md["num_sql_fields"] = m.num_sql_fields;
  md["batch_size"] = m.batch_size;
  md["n_batches"] = m.n_batches;
  md["n_positions"] = m.n_positions;
  md["n_layers"] = m.n_layers;
  md["n_heads"] = m.n_heads;
  check_finite(p.clean_logit_diff, "clean_logit_diff");
  check_finite(p.corrupt_logit_diff, "corrupt_logit_diff");
  check_finite(p.clean_metric, "clean_metric");
  check_finite(p.corrupt_metric, "corrupt_metric");
  ojson pa = ojson::object();
  pa["top_n_edges"] = p.top_n_edges;
  pa["clean_logit_diff"] = p.clean_logit_diff;
  pa["corrupt_logit_diff"] = p.corrupt_logit_diff;
  pa["clean_metric"] = p.clean_metric;
  pa["corrupt_metric"] = p.corrupt_metric;
  if (!p.extra.is_null()) {
    if (!p.extra.is_object()) throw std::invalid_argument("result JSON: extra parameters are not an object");
    for (auto it = p.extra.begin(); it != p.extra.end(); ++it) pa[it.key()] = it.value();  // dict.update
  }
  ojson edges = ojson::array();
  for (const NamedEdge& e : r.edges) {
    check_finite(e.score, "an edge score");
    ojson x = ojson::object();
    x["from_edge"] = e.from;
    x["to_edge"] = e.to;
    x["score"] = e.score;
    edges.push_back(std::move(x));
  }
  doc["metadata"] = std::move(md);
  doc["parameters"] = std::move(pa);
  doc["edges"] = std::move(edges);
  if (!r.faithfulness.is_null()) doc["faithfulness"] = r.faithfulness;
  return doc;
}

std::string result_file_name(const ResultMetadata& m) {
  return "eap_results.BM" + std::to_string(m.model) + ".CS" + std::to_string(m.commandset) + "_cs1." + m.feature_name +
         "." + py_bool(m.use_novel_names) + "." + py_bool(m.use_synonyms_table) + "." + py_bool(m.use_synonyms_field) +
         ".json";
}

namespace {

// Python's json also reads NaN, Infinity and -Infinity; nlohmann does not. Outside strings they
// become null, so that a notebook file with such a value still loads and names the key.
std::string python_tokens_to_null(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) out += text[++i];
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    size_t matched = 0;
    for (const char* tok : {"-Infinity", "Infinity", "NaN"}) {
      const size_t n = std::char_traits<char>::length(tok);
      if (!matched && text.compare(i, n, tok) == 0) matched = n;
    }
    if (matched) {
      out += "null";
      i += matched - 1;
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

LoadedResult parse_result(const std::string& text, const std::string& where) {
  LoadedResult r;
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) fail_input(where, "empty file, expected a result JSON");
  r.doc = nlohmann::json::parse(text, nullptr, false);
  if (r.doc.is_discarded()) r.doc = nlohmann::json::parse(python_tokens_to_null(text), nullptr, false);
  if (r.doc.is_discarded()) fail_input(where, "not valid JSON");
  if (!r.doc.is_object()) fail_input(where, "not a result JSON: the top level is not an object");
  for (const char* key : {"metadata", "parameters"}) {
    if (!r.doc.contains(key)) fail_input(where, std::string("not a result JSON: key '") + key + "' missing");
    if (!r.doc[key].is_object()) fail_input(where, std::string(key) + ": not an object");
  }
  if (!r.doc.contains("edges")) fail_input(where, "not a result JSON: key 'edges' missing");
  const auto& edges = r.doc["edges"];
  if (!edges.is_array()) fail_input(where, "edges: not a list");
  for (size_t i = 0; i < edges.size(); ++i) {
    const std::string at = "edges[" + std::to_string(i) + "]";
    const auto& e = edges[i];
    if (!e.is_object()) fail_input(where, at + ": not an object");
    NamedEdge ne;
    for (const char* key : {"from_edge", "to_edge"}) {
      if (!e.contains(key)) fail_input(where, at + "." + key + ": missing");
      if (!e[key].is_string()) fail_input(where, at + "." + key + ": not a string");
    }
    if (!e.contains("score")) fail_input(where, at + ".score: missing");
    if (!e["score"].is_number()) fail_input(where, at + ".score: not a number");
    ne.from = e["from_edge"].get<std::string>();
    ne.to = e["to_edge"].get<std::string>();
    if (ne.from.empty() || ne.to.empty()) fail_input(where, at + ": empty node name");
    ne.score = e["score"].get<double>();
    r.edges.push_back(std::move(ne));
  }
  return r;
}

LoadedResult read_result(const std::string& path) { return parse_result(read_file(path), path); }

std::vector<NamedEdge> read_result_edges(const std::string& path) { return read_result(path).edges; }

}  // namespace teap::report
