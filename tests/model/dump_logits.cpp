// Test helper: runs the C++ forward pass on a batch of token ids and writes the full logits, for the
// independent Python reference (tests/model/reference.py, tests/model/test_reference.py).
//
//   dump_logits MODEL_DIR OUT.bin --ids "1 2 3,4 5 6" [--dtype float32|bfloat16|float64]
//               [--device cpu|cuda] [--trim-vocab N]
//
// OUT.bin: float32 little-endian logits [B,P,V], row-major. OUT.bin.json: {"shape": [B, P, V]}.
// Exit 2 with a one-line message on bad arguments or bad input, 1 on anything else.
#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "model/model.hpp"
#include "util/error.hpp"

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "dump_logits: " << why << "\n"
            << "usage: dump_logits MODEL_DIR OUT.bin --ids \"1 2 3,4 5 6\" "
               "[--dtype float32|bfloat16|float64] [--device cpu|cuda] [--trim-vocab N]\n";
  std::exit(2);
}

// "1 2 3,4 5 6" -> rows of equal length.
std::vector<std::vector<int64_t>> parse_ids(const std::string& text) {
  std::vector<std::vector<int64_t>> rows;
  std::stringstream all(text);
  std::string row_text;
  while (std::getline(all, row_text, ',')) {
    std::stringstream row_stream(row_text);
    std::vector<int64_t> row;
    std::string tok;
    while (row_stream >> tok) {
      try {
        size_t used = 0;
        const long long v = std::stoll(tok, &used);
        if (used != tok.size() || v < 0) usage("--ids: not a token id: '" + tok + "'");
        row.push_back(v);
      } catch (const std::logic_error&) {
        usage("--ids: not a token id: '" + tok + "'");
      }
    }
    if (row.empty()) usage("--ids: empty row");
    if (!rows.empty() && row.size() != rows.front().size()) usage("--ids: rows of different lengths");
    rows.push_back(std::move(row));
  }
  if (rows.empty()) usage("--ids: no rows");
  return rows;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> positional;
  std::string ids_text;
  teap::model::LoadOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--ids") {
      ids_text = value();
    } else if (a == "--dtype") {
      options.dtype = value();
    } else if (a == "--device") {
      options.device = value();
    } else if (a == "--trim-vocab") {
      const std::string v = value();
      try {
        options.trim_vocab_to = std::stoi(v);
      } catch (const std::logic_error&) {
        usage("--trim-vocab: not a number: '" + v + "'");
      }
      if (options.trim_vocab_to <= 0) usage("--trim-vocab must be positive");
    } else if (a.rfind("--", 0) == 0) {
      usage("unknown option " + a);
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) usage("expected MODEL_DIR and OUT.bin");
  if (ids_text.empty()) usage("--ids is required");
  const auto rows = parse_ids(ids_text);
  const std::string out_path = positional[1];

  try {
    at::NoGradGuard no_grad;
    const teap::model::Model m = teap::model::load_model(positional[0], options);
    const int64_t B = static_cast<int64_t>(rows.size());
    const int64_t P = static_cast<int64_t>(rows.front().size());
    at::Tensor ids = at::empty({B, P}, at::kLong);
    auto acc = ids.accessor<int64_t, 2>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < P; ++p) {
        if (rows[b][p] >= m.config.vocab_size)
          usage("--ids: token " + std::to_string(rows[b][p]) + " is outside the vocabulary of " +
                std::to_string(m.config.vocab_size));
        acc[b][p] = rows[b][p];
      }

    const at::Tensor hidden = teap::model::forward(m, ids);
    const at::Tensor logits = teap::model::full_logits(m, hidden).to(at::kCPU, at::kFloat).contiguous();
    TORCH_CHECK(logits.dim() == 3 && logits.size(0) == B && logits.size(1) == P,
                "full_logits returned an unexpected shape");
    const int64_t V = logits.size(2);

    {
      std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
      if (!out) teap::fail_input(out_path, "cannot open for writing");
      // x86-64 and aarch64 are little-endian: the float32 bytes are written as they are.
      out.write(reinterpret_cast<const char*>(logits.data_ptr<float>()),
                static_cast<std::streamsize>(logits.numel() * sizeof(float)));
      if (!out) teap::fail_input(out_path, "write failed");
    }
    {
      std::ofstream js(out_path + ".json", std::ios::trunc);
      if (!js) teap::fail_input(out_path + ".json", "cannot open for writing");
      js << "{\"shape\": [" << B << ", " << P << ", " << V << "], \"dtype\": \"float32\", \"run_dtype\": \""
         << options.dtype << "\", \"trimmed_rows\": " << m.trimmed_rows << "}\n";
      if (!js) teap::fail_input(out_path + ".json", "write failed");
    }
  } catch (const teap::InputError& e) {
    std::cerr << "dump_logits: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "dump_logits: internal error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
