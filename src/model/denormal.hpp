// Owns flush-to-zero on CPU: denormal floats (below 1.2e-38 in float32 and bfloat16) cost a
// microcode assist per operation on x86, which made some checkpoints' contraction 13-19x slower;
// flushing them to zero changes no score beyond ~1e-37 (issue 17).
#pragma once

namespace teap::model {

// Sets flush-to-zero and denormals-are-zero on the calling thread and on every thread of the
// OpenMP pool that LibTorch and OpenBLAS (its OpenMP build) run their kernels on: the control
// register is per thread, and pool threads made before this call keep their own. Threads created
// later inherit the setting from the thread that creates them. Call it where the engine starts
// (the CLI's main, each sweep rank after its thread count is set, the benchmark) and again after
// at::set_num_threads. Returns false where the CPU cannot flush (the setting is then unchanged).
bool flush_denormals(bool on = true);  // on = false: denormals computed again (tests, the benchmark)

// Whether the calling thread flushes denormals now (for tests and logs).
bool flushing_denormals();

}  // namespace teap::model
