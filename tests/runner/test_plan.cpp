// The sweep's plan against a fake folder (a set of existing paths) and a job built in memory, and
// the folder's preparation in a temporary folder: no MPI, no model.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "io/unit_file.hpp"
#include "runner/folder.hpp"
#include "runner/manifest.hpp"
#include "runner/plan.hpp"
#include "util/error.hpp"
#include "util/files.hpp"

namespace teap::runner {
namespace {
namespace fs = std::filesystem;

job::Job make_job(int cells, int batches, const std::string& out = "/sweep") {
  job::Job j;
  j.path = "job.toml";
  j.output = out;
  j.output_origin = "job.toml:1: output";
  j.text = "# job\n";
  j.settings.batches = batches;
  for (int c = 0; c < cells; ++c) {
    job::Cell cell;
    cell.id = "BM1.CS1.cell" + std::to_string(c);
    cell.settings = "seed=0;cell=" + std::to_string(c);
    cell.hash = "h" + std::to_string(c);
    j.cells.push_back(cell);
  }
  return j;
}

// `score`, and a test kind that waits for every score unit of its cell.
std::vector<UnitKind> score_then_check() { return {UnitKind{"score", "units", -1}, UnitKind{"check", "checks", 0}}; }

FolderScan fake_scan(const job::Job& job, const std::vector<UnitKind>& kinds, const std::set<std::string>& files) {
  return scan_folder(job.output, job, kinds, [&](const UnitKind&, const std::string& p, const job::Cell&, int) {
    return UnitCheck{files.count(p) ? UnitState::published : UnitState::missing, ""};
  });
}

std::vector<UnitRef> units_of(const Plan& plan) {
  std::vector<UnitRef> u;
  for (const auto& p : plan.pending) u.push_back(p.unit);
  return u;
}

TEST(Plan, FreshFolderHasEveryScoreUnitInCellThenBatchOrder) {
  const job::Job job = make_job(2, 3);
  const auto kinds = unit_kinds(job);
  const Plan plan = make_plan(job, kinds, fake_scan(job, kinds, {}), Shard{});
  ASSERT_EQ(plan.kinds.size(), 1u);
  EXPECT_EQ(plan.kinds[0].name, "score");
  EXPECT_EQ(plan.total, 6);
  EXPECT_EQ(plan.done_before, 0);
  const std::vector<UnitRef> want = {{0, 0, 0}, {0, 0, 1}, {0, 0, 2}, {0, 1, 0}, {0, 1, 1}, {0, 1, 2}};
  EXPECT_EQ(units_of(plan), want);
  for (const auto& p : plan.pending) EXPECT_TRUE(p.needs.empty());
}

TEST(Plan, PublishedUnitsAreDoneBefore) {
  const job::Job job = make_job(2, 2);
  const auto kinds = unit_kinds(job);
  const std::set<std::string> files = {unit_path("/sweep", "BM1.CS1.cell0", 1), unit_path("/sweep", "BM1.CS1.cell1", 0),
                                       failure_path("/sweep", "BM1.CS1.cell1", 1)};
  const FolderScan scan = fake_scan(job, kinds, files);
  EXPECT_EQ(scan.done_in_cell(0, 0), 1);
  EXPECT_EQ(scan.done_in_cell(0, 1), 1);
  const Plan plan = make_plan(job, kinds, scan, Shard{});
  EXPECT_EQ(plan.total, 4);
  EXPECT_EQ(plan.done_before, 2);
  const std::vector<UnitRef> want = {{0, 0, 0}, {0, 1, 1}};  // a failure note is not a published unit
  EXPECT_EQ(units_of(plan), want);
}

TEST(Plan, ShardsPartitionTheUnits) {
  const job::Job job = make_job(3, 5);
  const auto kinds = unit_kinds(job);
  std::set<std::tuple<int, int, int>> seen;
  int64_t total = 0;
  for (int k = 0; k < 4; ++k) {
    const Plan plan = make_plan(job, kinds, fake_scan(job, kinds, {}), Shard{k, 4});
    total += plan.total;
    for (const auto& u : units_of(plan)) {
      EXPECT_EQ((u.cell * 5 + u.batch) % 4, k);
      EXPECT_TRUE(seen.insert({u.kind, u.cell, u.batch}).second);
    }
  }
  EXPECT_EQ(total, 15);
  EXPECT_EQ(seen.size(), 15u);
}

TEST(Plan, DependentKindWaitsForItsCellsPendingUnits) {
  const job::Job job = make_job(2, 2);
  const auto kinds = score_then_check();
  // Cell 0 is fully scored already; cell 1 has batch 0 scored.
  const std::set<std::string> files = {unit_path("/sweep", "BM1.CS1.cell0", 0), unit_path("/sweep", "BM1.CS1.cell0", 1),
                                       unit_path("/sweep", "BM1.CS1.cell1", 0)};
  const Plan plan = make_plan(job, kinds, fake_scan(job, kinds, files), Shard{});
  EXPECT_EQ(plan.total, 8);
  EXPECT_EQ(plan.done_before, 3);
  // Score units first (pulled first), then the checks.
  const std::vector<UnitRef> want = {{0, 1, 1}, {1, 0, 0}, {1, 0, 1}, {1, 1, 0}, {1, 1, 1}};
  ASSERT_EQ(units_of(plan), want);
  EXPECT_TRUE(plan.pending[0].needs.empty());
  EXPECT_TRUE(plan.pending[1].needs.empty());  // cell 0's scores were all published before
  EXPECT_TRUE(plan.pending[2].needs.empty());
  EXPECT_EQ(plan.pending[3].needs, std::vector<int32_t>{0});  // cell 1 batch 1's score unit
  EXPECT_EQ(plan.pending[4].needs, std::vector<int32_t>{0});
  for (const auto& p : plan.pending)
    for (int32_t n : p.needs) EXPECT_LT(n, &p - plan.pending.data()) << "a unit needs one pulled after it";
}

TEST(Plan, PublishedDependentUnitsAreNotRedone) {
  const job::Job job = make_job(1, 2);
  const auto kinds = score_then_check();
  const std::set<std::string> files = {unit_path("/sweep", "BM1.CS1.cell0", 0), unit_path("/sweep", "BM1.CS1.cell0", 1),
                                       kind_unit_path("/sweep", "checks", "BM1.CS1.cell0", 1)};
  const Plan plan = make_plan(job, kinds, fake_scan(job, kinds, files), Shard{});
  const std::vector<UnitRef> want = {{1, 0, 0}};
  EXPECT_EQ(units_of(plan), want);
  EXPECT_EQ(plan.done_before, 3);
}

TEST(Plan, DependentUnitsWaitingForAnotherShardAreDeferred) {
  const job::Job job = make_job(1, 2);
  const auto kinds = score_then_check();
  // Shard 0 of 2 owns batch 0 of each kind; the check needs score batch 1, shard 1's, unpublished.
  const Plan early = make_plan(job, kinds, fake_scan(job, kinds, {}), Shard{0, 2});
  const std::vector<UnitRef> want = {{0, 0, 0}};
  EXPECT_EQ(units_of(early), want);
  EXPECT_EQ(early.deferred, 1);
  EXPECT_EQ(early.total, 2);
  // Once shard 1 has published its score unit, shard 0's check waits only for its own.
  const Plan later =
      make_plan(job, kinds, fake_scan(job, kinds, {unit_path("/sweep", "BM1.CS1.cell0", 1)}), Shard{0, 2});
  const std::vector<UnitRef> want_later = {{0, 0, 0}, {1, 0, 0}};
  ASSERT_EQ(units_of(later), want_later);
  EXPECT_EQ(later.pending[1].needs, std::vector<int32_t>{0});
  EXPECT_EQ(later.deferred, 0);
}

TEST(Plan, MessageRoundTripKeepsPlanAndErrorKind) {
  const job::Job job = make_job(2, 2);
  const auto kinds = score_then_check();
  PlanOutcome o;
  o.plan = make_plan(job, kinds, fake_scan(job, kinds, {unit_path("/sweep", "BM1.CS1.cell0", 0)}), Shard{});
  const PlanOutcome back = decode_outcome(encode_outcome(o));
  EXPECT_EQ(back.error, PlanOutcome::Error::none);
  EXPECT_NO_THROW(back.rethrow());
  ASSERT_EQ(back.plan.kinds.size(), 2u);
  EXPECT_EQ(back.plan.kinds[1].name, "check");
  EXPECT_EQ(back.plan.kinds[1].folder, "checks");
  EXPECT_EQ(back.plan.kinds[1].after, 0);
  EXPECT_EQ(units_of(back.plan), units_of(o.plan));
  for (size_t i = 0; i < o.plan.pending.size(); ++i) EXPECT_EQ(back.plan.pending[i].needs, o.plan.pending[i].needs);
  EXPECT_EQ(back.plan.total, o.plan.total);
  EXPECT_EQ(back.plan.done_before, o.plan.done_before);

  const PlanOutcome input = decode_outcome(encode_outcome(PlanOutcome{PlanOutcome::Error::input, "job.toml: bad", {}, {}}));
  EXPECT_THROW(input.rethrow(), InputError);
  const PlanOutcome failure = decode_outcome(encode_outcome(PlanOutcome{PlanOutcome::Error::failure, "disk", {}, {}}));
  try {
    failure.rethrow();
    FAIL() << "no throw";
  } catch (const InputError&) {
    FAIL() << "a failure became an input error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "disk");
  }
  EXPECT_THROW(decode_outcome("not msgpack"), std::runtime_error);
}

UnitCheck real_folder(const UnitKind& k, const std::string& p, const job::Cell& c, int b) { return inspect_file(k, p, c, b); }

struct TempDir {
  fs::path path = fs::temp_directory_path() / ("teap-plan-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
                                               "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
  TempDir() { fs::remove_all(path); fs::create_directories(path); }
  ~TempDir() { fs::remove_all(path); }
};

void touch(const std::string& p) {
  fs::create_directories(fs::path(p).parent_path());
  std::ofstream(p) << "x";
}

// A complete unit file of `cell` (one prompt, a 2 x 3 graph) as the runner would publish it.
void write_unit_file(const std::string& path, const job::Cell& cell, int batch) {
  io::UnitRecord u;
  u.text_attrs = {{"cell_id", cell.id}, {"settings_hash", cell.hash}};
  u.int_attrs = {{"batch_index", batch}};
  u.n_upstream = 2;
  u.n_downstream = 3;
  u.n_prompts = 1;
  u.n_positions = 4;
  u.scores.assign(6, 0.5f);
  u.valid.assign(6, 1);
  u.upstream = {"head.0.0", "mlp.0"};
  u.downstream = {"head.1.0.q", "mlp.1", "logits"};
  u.clean_ld = {1.0};
  u.corrupt_ld = {0.5};
  u.clean_ids = u.corrupt_ids = {1, 2, 3, 4};
  u.clean_token = u.corrupt_token = u.answer_token = {7};
  u.clean_word = u.corrupt_word = {"w"};
  fs::create_directories(fs::path(path).parent_path());
  io::write_unit(path, u);
}

TEST(Folder, PrepareWritesManifestAndRemovesLeftovers) {
  TempDir dir;
  const std::string out = (dir.path / "out").string();
  const job::Job job = make_job(2, 2, out);
  const auto kinds = unit_kinds(job);
  write_unit_file(unit_path(out, "BM1.CS1.cell0", 0), job.cells[0], 0);
  touch(out + "/units/BM1.CS1.cell0/b00001.h5.tmp.1234");  // a killed writer's
  touch(failure_path(out, "BM1.CS1.cell1", 1));            // about to be redone
  const FolderScan scan = scan_folder(out, job, kinds, real_folder);
  const Plan plan = make_plan(job, kinds, scan, Shard{});
  EXPECT_EQ(plan.done_before, 1);
  prepare_folder(job, manifest_of(job), scan, plan, Shard{});
  EXPECT_TRUE(fs::exists(out + "/sweep.json"));
  EXPECT_EQ(read_file(out + "/job.toml"), job.text);
  for (const char* sub : {"units", "failed", "logs", "cells"}) EXPECT_TRUE(fs::is_directory(out + "/" + sub)) << sub;
  EXPECT_FALSE(fs::exists(out + "/units/BM1.CS1.cell0/b00001.h5.tmp.1234"));
  EXPECT_FALSE(fs::exists(failure_path(out, "BM1.CS1.cell1", 1)));
  EXPECT_TRUE(fs::exists(unit_path(out, "BM1.CS1.cell0", 0)));
  const auto m = nlohmann::json::parse(read_file(out + "/sweep.json"));
  ASSERT_EQ(m["cells"].size(), 2u);
  EXPECT_EQ(m["cells"][1]["settings_hash"], "h1");
}

TEST(Folder, DamagedAndForeignUnitsAreRedoneAndMovedAside) {
  TempDir dir;
  const std::string out = (dir.path / "out").string();
  const job::Job job = make_job(2, 3, out);
  const auto kinds = unit_kinds(job);
  const std::string good = unit_path(out, "BM1.CS1.cell0", 0), cut = unit_path(out, "BM1.CS1.cell0", 1),
                    garbage = unit_path(out, "BM1.CS1.cell0", 2), other_job = unit_path(out, "BM1.CS1.cell1", 0),
                    other_cell = unit_path(out, "BM1.CS1.cell1", 1), other_batch = unit_path(out, "BM1.CS1.cell1", 2);
  write_unit_file(good, job.cells[0], 0);
  write_unit_file(cut, job.cells[0], 1);
  fs::resize_file(cut, 1000);  // truncate -s 1000
  touch(garbage);
  job::Cell foreign = job.cells[1];
  foreign.hash = "another-seed";
  write_unit_file(other_job, foreign, 0);
  write_unit_file(other_cell, job.cells[0], 1);
  write_unit_file(other_batch, job.cells[1], 0);

  const FolderScan scan = scan_folder(out, job, kinds, real_folder);
  ASSERT_EQ(scan.problems.size(), 5u);
  const std::vector<std::pair<std::string, UnitState>> want = {{cut, UnitState::damaged}, {garbage, UnitState::damaged},
                                                               {other_job, UnitState::foreign},
                                                               {other_cell, UnitState::foreign},
                                                               {other_batch, UnitState::foreign}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(scan.problems[i].path, want[i].first);
    EXPECT_EQ(scan.problems[i].check.state, want[i].second) << scan.problems[i].check.why;
  }
  EXPECT_NE(scan.problems[2].check.why.find("another-seed"), std::string::npos) << scan.problems[2].check.why;
  EXPECT_NE(scan.problems[3].check.why.find("holds cell BM1.CS1.cell0"), std::string::npos);
  EXPECT_NE(scan.problems[4].check.why.find("holds batch 0"), std::string::npos);

  const Plan plan = make_plan(job, kinds, scan, Shard{});
  EXPECT_EQ(plan.done_before, 1);
  EXPECT_EQ(plan.pending.size(), 5u);
  prepare_folder(job, manifest_of(job), scan, plan, Shard{});
  EXPECT_TRUE(fs::exists(good));
  for (const auto& [path, state] : want) {
    EXPECT_FALSE(fs::exists(path)) << path;
    EXPECT_TRUE(fs::exists(rejected_path(out, path))) << path;
  }
  // A second scan sees them missing, not damaged.
  const FolderScan again = scan_folder(out, job, kinds, real_folder);
  EXPECT_TRUE(again.problems.empty());
  EXPECT_EQ(make_plan(job, kinds, again, Shard{}).pending.size(), 5u);
}

TEST(Folder, OtherShardsLeftoversAreKept) {
  TempDir dir;
  const std::string out = (dir.path / "out").string();
  const job::Job job = make_job(1, 2, out);
  const auto kinds = unit_kinds(job);
  touch(out + "/units/BM1.CS1.cell0/b00000.h5.tmp.1");  // shard 0's
  touch(out + "/units/BM1.CS1.cell0/b00001.h5.tmp.2");  // shard 1's, maybe being written now
  const Shard shard{0, 2};
  const FolderScan scan = scan_folder(out, job, kinds, real_folder);
  prepare_folder(job, manifest_of(job), scan, make_plan(job, kinds, scan, shard), shard);
  EXPECT_FALSE(fs::exists(out + "/units/BM1.CS1.cell0/b00000.h5.tmp.1"));
  EXPECT_TRUE(fs::exists(out + "/units/BM1.CS1.cell0/b00001.h5.tmp.2"));
}

TEST(Folder, OutputBlockedByAFileIsAnInputError) {
  TempDir dir;
  touch((dir.path / "file").string());
  const job::Job job = make_job(1, 1, (dir.path / "file" / "out").string());
  const auto kinds = unit_kinds(job);
  const FolderScan scan = scan_folder(job.output, job, kinds, real_folder);
  const Plan plan = make_plan(job, kinds, scan, Shard{});
  try {
    prepare_folder(job, manifest_of(job), scan, plan, Shard{});
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("job.toml:1: output"), std::string::npos) << e.what();
  }
}

TEST(Manifest, OtherSettingsForACellAreRefusedNamingTheDifference) {
  TempDir dir;
  const std::string path = (dir.path / "sweep.json").string();
  job::Job first = make_job(1, 1);
  write_file_atomic(path, manifest_of(first).dump());
  job::Job second = make_job(2, 1);
  EXPECT_EQ(merge_manifest(path, manifest_of(second))["cells"].size(), 2u);  // cell0 unchanged, cell1 added
  second.cells[0].settings = "seed=7;cell=0";
  second.cells[0].hash = "other";
  try {
    merge_manifest(path, manifest_of(second));
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("seed '0' -> '7'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace teap::runner
