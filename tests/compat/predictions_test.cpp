// Prediction ledgers: predictions.h5 round trips and refusals, CSV / JSONL parsing and every error,
// and joining items by (task, id).
#include <gtest/gtest.h>

#include "compat/flips.h"
#include "compat/predictions.h"
#include "core/h5.h"

#include <filesystem>
#include <fstream>
#include <sstream>

using namespace strata::compat;
namespace fs = std::filesystem;
namespace core = strata::core;

namespace {

torch::Tensor L(std::vector<int64_t> v) { return torch::tensor(v, torch::kLong); }

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("strata_predictions_test_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string write(const std::string& name, const std::string& text) const {
    std::ofstream(path / name) << text;
    return (path / name).string();
  }
};

std::string bytes(const std::string& path) {
  std::stringstream s;
  s << std::ifstream(path, std::ios::binary).rdbuf();
  return s.str();
}

template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "no error";
}

}  // namespace

TEST(CompatPredictions, H5RoundTripAndLayout) {
  TempDir dir;
  const std::string path = (dir.path / "predictions.h5").string();
  PredictionVersions versions;
  for (int64_t v = 0; v < 2; ++v) {
    std::vector<PredictionTable> parts;
    for (int64_t t = 0; t < 3; ++t)
      parts.push_back({torch::arange(5, torch::kLong) * 3 + t, torch::randint(4, {5}, torch::kLong),
                       torch::randint(4, {5}, torch::kLong), torch::rand({5}), torch::full({5}, t, torch::kLong)});
    versions[v] = concat_tables(parts);
  }
  write_predictions(path, versions);
  {
    auto f = core::open_file(path, core::FileMode::kRead);
    EXPECT_EQ(core::list_children(f, "/"), (std::vector<std::string>{"v000", "v001"}));
    EXPECT_EQ(core::list_children(f, "v001"), (std::vector<std::string>{"task00", "task01", "task02"}));
    EXPECT_EQ(core::list_children(f, "v001/task02"), (std::vector<std::string>{"id", "label", "pred", "prob"}));
    EXPECT_EQ(core::read_tensor(f, "v001/task02/prob").scalar_type(), torch::kFloat32);
    EXPECT_TRUE(core::read_tensor(f, "v001/task02/id").equal(L({2, 5, 8, 11, 14})));
  }
  const PredictionVersions back = read_predictions(path);
  ASSERT_EQ(back.size(), 2u);
  for (const auto& [v, t] : versions) {
    EXPECT_TRUE(torch::equal(back.at(v).ids, t.ids));
    EXPECT_TRUE(torch::equal(back.at(v).preds, t.preds));
    EXPECT_TRUE(torch::equal(back.at(v).conf, t.conf));
    EXPECT_TRUE(torch::equal(back.at(v).tasks, t.tasks));
  }
  EXPECT_TRUE(torch::equal(read_predictions(path, 1).labels, versions[1].labels));
  EXPECT_EQ(list_prediction_versions(path), (std::vector<int64_t>{0, 1}));
  EXPECT_NE(error_of([&] { read_predictions(path, 4); }).find("no group /v004 (versions present: v000 v001)"),
            std::string::npos);
  // Inconsistent input is refused and the file stays as it was.
  const std::string before = bytes(path);
  versions[2] = versions[0];
  versions[2].conf = torch::rand({4});
  EXPECT_THROW(write_predictions(path, versions), c10::Error);
  versions[2] = versions[0];
  versions[2].tasks = torch::Tensor();
  EXPECT_NE(error_of([&] { write_predictions(path, versions); }).find("version 2 needs the tasks"), std::string::npos);
  EXPECT_EQ(bytes(path), before);
}

// A run appends one version per task; retraining from version v replaces v and everything after it.
TEST(CompatPredictions, AppendAddsOneVersionAndReplacesLaterOnes) {
  TempDir dir;
  const std::string path = (dir.path / "predictions.h5").string();
  auto version_table = [](int64_t seed) {
    torch::manual_seed(seed);
    std::vector<PredictionTable> parts;
    for (int64_t t = 0; t < 2; ++t)
      parts.push_back({torch::arange(4, torch::kLong) + 10 * t, torch::randint(3, {4}, torch::kLong),
                       torch::randint(3, {4}, torch::kLong), torch::rand({4}), torch::full({4}, t, torch::kLong)});
    return concat_tables(parts);
  };
  for (int64_t v = 0; v < 3; ++v) append_predictions(path, v, version_table(v));
  EXPECT_EQ(list_prediction_versions(path), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_TRUE(torch::equal(read_predictions(path, 2).preds, version_table(2).preds));
  {
    auto f = core::open_file(path, core::FileMode::kRead);
    EXPECT_EQ(core::get_attr_string(f, "format"), "strata-predictions");
  }
  {  // every append rewrites the whole-file checksum for the new bytes
    const auto block = core::check_user_block(path, "strata-predictions-userblock");
    EXPECT_TRUE(block.present);
    EXPECT_EQ(block.problem, "");
  }
  append_predictions(path, 1, version_table(7));  // retrained from v000: v001 replaced, v002 gone
  EXPECT_EQ(list_prediction_versions(path), (std::vector<int64_t>{0, 1}));
  EXPECT_TRUE(torch::equal(read_predictions(path, 0).preds, version_table(0).preds));
  EXPECT_TRUE(torch::equal(read_predictions(path, 1).preds, version_table(7).preds));
  // Bad input, or a file that is not a predictions file: refused, the file as it was.
  const std::string before = bytes(path);
  PredictionTable bad = version_table(3);
  bad.conf = torch::Tensor();
  EXPECT_NE(error_of([&] { append_predictions(path, 2, bad); }).find("needs the tasks and conf"), std::string::npos);
  EXPECT_EQ(bytes(path), before);
  const std::string other = (dir.path / "other.h5").string();
  core::atomic_write_h5(other, [](H5::H5File& f) { core::set_attr(f, "format", "strata-version"); });
  EXPECT_NE(error_of([&] { append_predictions(other, 0, version_table(0)); }).find("is not a strata-predictions file"),
            std::string::npos);
}

TEST(CompatPredictions, H5UserBlockIsCheckedBeforeHdf5) {
  TempDir dir;
  const std::string path = (dir.path / "predictions.h5").string();
  PredictionVersions versions;
  versions[0] = {torch::arange(6, torch::kLong), torch::zeros({6}, torch::kLong), torch::ones({6}, torch::kLong),
                 torch::rand({6}), torch::zeros({6}, torch::kLong)};
  write_predictions(path, versions);
  const std::string good = bytes(path);
  EXPECT_EQ(good.rfind("strata-predictions-userblock\nsize=" + std::to_string(good.size()) + "\n", 0), 0u);
  auto put = [&](const std::string& b) { std::ofstream(path, std::ios::binary | std::ios::trunc) << b; };
  put(good.substr(0, good.size() - 100));
  for (const std::string& msg : {error_of([&] { read_predictions(path); }), error_of([&] { read_predictions(path, 0); }),
                                 error_of([&] { list_prediction_versions(path); })})
    EXPECT_NE(msg.find("'" + path + "': file is truncated: " + std::to_string(good.size() - 100) +
                       " bytes, header says " + std::to_string(good.size())),
              std::string::npos)
        << msg;
  std::string flipped = good;
  flipped[good.size() - 10] ^= 0x01;
  put(flipped);
  const std::string msg = error_of([&] { read_predictions(path); });
  EXPECT_EQ(msg.rfind("strata::compat::read_predictions(): '" + path + "': checksum mismatch: bytes 512..", 0), 0u) << msg;
  // Without the user block (a file from before it existed) it reads as before.
  put(good.substr(512));
  EXPECT_TRUE(torch::equal(read_predictions(path, 0).ids, versions[0].ids));
}

TEST(CompatPredictions, SelectTasksKeepsRowOrder) {
  const PredictionTable t{L({5, 6, 7, 8}), L({0, 1, 0, 1}), L({0, 0, 0, 1}), torch::rand({4}), L({2, 0, 2, 1})};
  const PredictionTable s = select_tasks(t, {2, 1});
  EXPECT_TRUE(s.ids.equal(L({5, 7, 8})));
  EXPECT_TRUE(s.tasks.equal(L({2, 2, 1})));
  EXPECT_EQ(table_tasks(t), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(default_compare_tasks(3, 1), (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(tasks_trained_by(0), (std::vector<int64_t>{0}));
}

TEST(CompatPredictions, CsvAndJsonl) {
  TempDir dir;
  // Columns in any order, spaces and CRLF tolerated, blank lines skipped.
  const std::string csv = dir.write("a.csv", "task, id,label,pred,prob\r\n0,17,3,3,0.9\r\n\r\n1,17,3,2,0.25\n");
  const PredictionTable a = read_predictions_csv(csv);
  EXPECT_TRUE(a.ids.equal(L({17, 17})));
  EXPECT_TRUE(a.tasks.equal(L({0, 1})));
  EXPECT_TRUE(a.preds.equal(L({3, 2})));
  EXPECT_TRUE(a.conf.allclose(torch::tensor({0.9f, 0.25f})));
  const std::string jl = dir.write("a.jsonl", "{\"id\": 17, \"label\": 3, \"pred\": 3, \"prob\": 0.9, \"task\": 0}\n\n"
                                              "{\"task\": 1, \"id\": 17, \"label\": 3, \"pred\": 2, \"prob\": 0.25}\n");
  const PredictionTable b = read_ledger_file(jl);
  EXPECT_TRUE(b.ids.equal(a.ids) && b.tasks.equal(a.tasks) && b.preds.equal(a.preds));
  // Round trip through the writer.
  const std::string out = (dir.path / "out.csv").string();
  EXPECT_EQ(write_predictions_csv(out, a), 2);
  EXPECT_TRUE(read_predictions_csv(out).conf.allclose(a.conf));
  EXPECT_EQ(bytes(out).substr(0, 24), "id,label,pred,prob,task\n");
  // Minimal columns: no prob, no task.
  const PredictionTable m = read_ledger_file(dir.write("m.csv", "id,label,pred\n1,0,0\n2,1,0\n"));
  EXPECT_FALSE(m.conf.defined());
  EXPECT_FALSE(m.tasks.defined());

  struct Case {
    std::string name, text, expect;
  } cases[] = {
      {"h.csv", "1,0,0\n", "h.csv:1: unknown column '1'"},
      {"h2.csv", "id,label\n1,0\n", "h2.csv:1: the header has no 'pred' column"},
      {"e.csv", "", "e.csv:1: empty file"},
      {"n.csv", "id,label,pred\n", "n.csv: no prediction rows"},
      {"f.csv", "id,label,pred\n1,0,0\n2,1\n", "f.csv:3: 2 fields, the header has 3"},
      {"i.csv", "id,label,pred\n1,0,0\nx7,1,0\n", "i.csv:3: column 'id' must be an integer, got 'x7'"},
      {"p.csv", "id,label,pred,prob\n1,0,0,1.5\n", "p.csv:2: column 'prob' must be a probability in [0, 1], got '1.5'"},
      {"d.csv", "id,label,pred\n4,0,0\n5,1,1\n4,0,1\n", "d.csv:4: duplicate item id 4 (first at line 2)"},
      {"dt.csv", "id,label,pred,task\n4,0,0,0\n4,0,0,1\n4,1,1,0\n", "dt.csv:4: duplicate item (task 0, id 4) (first at line 2)"},
      {"j.jsonl", "{\"id\": 1, \"label\": 0, \"pred\": 0}\n{\"id\": 2, \"label\": 0\n", "j.jsonl:2: not valid JSON"},
      {"k.jsonl", "{\"id\": 1, \"label\": 0, \"pred\": 0}\n{\"id\": 2, \"label\": 0}\n", "k.jsonl:2: missing key 'pred'"},
      {"s.jsonl", "{\"id\": \"a\", \"label\": 0, \"pred\": 0}\n", "s.jsonl:1: 'id' must be an integer"},
      {"u.jsonl", "{\"id\": 1, \"label\": 0, \"pred\": 0, \"score\": 1}\n", "u.jsonl:1: unknown key 'score'"},
      {"c.jsonl", "{\"id\": 1, \"label\": 0, \"pred\": 0}\n{\"id\": 2, \"label\": 0, \"pred\": 0, \"task\": 0}\n",
       "c.jsonl:2: every line must carry the same keys"},
  };
  for (const auto& c : cases) {
    const std::string p = dir.write(c.name, c.text);
    const std::string e = error_of([&] { read_ledger_file(p); });
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.name << " -> " << e;
  }
  EXPECT_NE(error_of([&] { read_ledger_file((dir.path / "missing.csv").string()); }).find("cannot open"),
            std::string::npos);
}

TEST(CompatPredictions, AlignByTaskAndId) {
  // The same example ids in two tasks (permuted streams): items are (task, id).
  const PredictionTable o{L({1, 0, 0, 1}), L({1, 0, 2, 3}), L({1, 0, 2, 0}), torch::Tensor(), L({0, 0, 1, 1})};
  const PredictionTable n{L({0, 1, 1, 0}), L({2, 3, 1, 0}), L({0, 3, 0, 0}), torch::Tensor(), L({1, 1, 0, 0})};
  const FlipInputs in = align_by_id(o, n);
  EXPECT_TRUE(in.ids.equal(L({0, 1, 0, 1})));
  EXPECT_TRUE(in.groups.equal(L({0, 0, 1, 1})));
  EXPECT_TRUE(in.labels.equal(L({0, 1, 2, 3})));
  EXPECT_TRUE(in.old_pred.equal(L({0, 1, 2, 0})));
  EXPECT_TRUE(in.new_pred.equal(L({0, 0, 0, 3})));
  PredictionTable moved = n;
  moved.tasks = L({1, 1, 0, 2});  // (2, 0) instead of (0, 0)
  const std::string e = error_of([&] { align_by_id(o, moved, "old.csv", "new.csv"); });
  EXPECT_NE(e.find("1 only in old.csv (first (task 0, id 0)), 1 only in new.csv (first (task 2, id 0))"),
            std::string::npos)
      << e;
  PredictionTable relabel = n;
  relabel.labels = L({2, 3, 1, 9});
  EXPECT_NE(error_of([&] { align_by_id(o, relabel); }).find("(task 0, id 0) has label 0 in OLD and 9 in NEW"),
            std::string::npos);
  PredictionTable no_task = n;
  no_task.tasks = torch::Tensor();
  EXPECT_NE(error_of([&] { align_by_id(o, no_task); }).find("OLD has a task column but NEW has none"),
            std::string::npos);
}
