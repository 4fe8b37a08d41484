// Weight files in and out of Strata, checked against torchvision's own logits
// (tests/fixtures/make_vit_fixture.py writes the fixture files).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "core/h5.h"
#include "core/safetensors.h"
#include "models/models.h"
#include "models/weights.h"

namespace fs = std::filesystem;
using namespace strata;
using namespace strata::models;

namespace {

std::string fixture(const std::string& name) { return std::string(STRATA_SOURCE_DIR) + "/tests/fixtures/" + name; }

std::string tmp_file(const std::string& name) {
  return ::testing::TempDir() + "strata_weights_" + std::to_string(::getpid()) + "_" + name;
}

// The fixture's torchvision VisionTransformer(image_size=32, patch_size=8, num_layers=2,
// num_heads=3, hidden_dim=48, mlp_dim=96, num_classes=5).
ModelOptions fixture_vit(int64_t classes = 5) {
  return ModelOptions().arch("vit").input_shape({3, 32, 32}).num_classes(classes).patch(8).dim(48).depth(2).heads(3).mlp_dim(96);
}

struct Io {
  torch::Tensor inputs, logits;
};
Io fixture_io() {
  auto io = core::read_safetensors(fixture("vit_io.safetensors"));
  Io out;
  for (auto& [k, t] : io.tensors) (k == "inputs" ? out.inputs : out.logits) = t.to(torch::kFloat32);
  return out;
}

double max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

torch::Tensor logits_of(Model& model, const torch::Tensor& x) {
  torch::NoGradGuard g;
  model->eval();
  return model->forward(x);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.msg();
  }
  return "";
}

}  // namespace

TEST(Weights, FixtureFilesReproduceTorchvisionLogits) {
  const auto io = fixture_io();
  ASSERT_EQ(io.inputs.sizes(), (std::vector<int64_t>{4, 3, 32, 32}));
  ASSERT_EQ(io.logits.sizes(), (std::vector<int64_t>{4, 5}));
  struct Case {
    const char* file;
    WeightNames names;
    const char* format;
  };
  for (const Case& c : {Case{"vit_torchvision.safetensors", WeightNames::kTorchvision, "safetensors"},
                        Case{"vit_timm.safetensors", WeightNames::kTimm, "safetensors"},
                        Case{"vit_torchvision.h5", WeightNames::kTorchvision, "h5-state-dict"}}) {
    torch::manual_seed(1);
    Model model = make_model(fixture_vit());
    const auto before = logits_of(model, io.inputs);
    const auto report = load_weights(*model, fixture(c.file));  // names auto-detected
    EXPECT_EQ(report.names, c.names) << c.file;
    EXPECT_EQ(report.format, c.format) << c.file;
    EXPECT_EQ(report.tensors, static_cast<int64_t>(model->named_parameters().size())) << c.file;
    const auto got = logits_of(model, io.inputs);
    const double d = max_diff(got, io.logits);
    std::printf("[ weights  ] %-28s max |logit - torchvision| = %.3g\n", c.file, d);
    EXPECT_LT(d, 1e-5) << c.file;
    EXPECT_GT(max_diff(before, io.logits), 0.1) << "the fresh model must not already match";
  }
}

TEST(Weights, ExportThenReloadEveryFormatAndNaming) {
  const auto io = fixture_io();
  Model src = make_model(fixture_vit());
  load_weights(*src, fixture("vit_torchvision.safetensors"));
  const auto reference = logits_of(src, io.inputs);
  const auto file_tensors = core::read_safetensors(fixture("vit_torchvision.safetensors")).tensors;
  for (auto names : {WeightNames::kStrata, WeightNames::kTorchvision, WeightNames::kTimm})
    for (const std::string format : {"safetensors", "h5"}) {
      const auto path = tmp_file(to_string(names) + "." + format);
      save_weights(*src, path, format, names);
      torch::manual_seed(7);
      Model dst = make_model(fixture_vit());
      const auto report = load_weights(*dst, path, LoadOptions().names(to_string(names)));
      EXPECT_EQ(report.names, names);
      EXPECT_EQ(max_diff(logits_of(dst, io.inputs), reference), 0.0) << path;
      // Auto-detection recognises Strata's own export too.
      Model again = make_model(fixture_vit());
      EXPECT_EQ(load_weights(*again, path).names, names) << path;
      std::remove(path.c_str());
    }
  // torchvision export: exactly torchvision's keys, shapes and values (fused in_proj included).
  const auto exported = export_state(*src, WeightNames::kTorchvision);
  ASSERT_EQ(exported.size(), file_tensors.size());
  std::map<std::string, torch::Tensor> by_name(exported.begin(), exported.end());
  for (const auto& [k, t] : file_tensors) {
    ASSERT_TRUE(by_name.count(k)) << k;
    EXPECT_TRUE(torch::equal(by_name[k], t.to(torch::kFloat32))) << k;
  }
}

TEST(Weights, ExportedSafetensorsLoadIntoTorchvision) {
  // Needs Debian's python3-torchvision (the script exits 77 without it); the C++ round trip above
  // runs regardless.
  const char* py = std::getenv("STRATA_TEST_PYTHON");
  const std::string python = py ? py : "/usr/bin/python3";
  if (!fs::exists(python)) GTEST_SKIP() << "no " << python;
  Model src = make_model(fixture_vit());
  load_weights(*src, fixture("vit_timm.safetensors"));
  std::string files;
  std::vector<std::string> paths;
  for (auto names : {WeightNames::kTorchvision, WeightNames::kTimm}) {
    paths.push_back(tmp_file("py_" + to_string(names) + ".safetensors"));
    save_weights(*src, paths.back(), "safetensors", names);
    files += " " + paths.back();
  }
  const std::string cmd = python + " " + std::string(STRATA_SOURCE_DIR) + "/tests/fixtures/make_vit_fixture.py --check" + files;
  const int status = std::system(cmd.c_str());
  for (const auto& p : paths) std::remove(p.c_str());
  if (WIFEXITED(status) && WEXITSTATUS(status) == 77) GTEST_SKIP() << python << " has no torch/torchvision";
  EXPECT_EQ(status, 0) << cmd;
}

TEST(Weights, StrictLoadReportsEveryProblemAndChangesNothing) {
  // Depth 1 vs a depth-2 file: the second layer's keys are unexpected.
  {
    Model m = make_model(fixture_vit().depth(1));
    auto msg = error_of([&] { load_weights(*m, fixture("vit_torchvision.safetensors")); });
    EXPECT_NE(msg.find("vit_torchvision.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected keys (12)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("encoder.layers.encoder_layer_1.self_attention.in_proj_weight"), std::string::npos) << msg;
  }
  // Depth 3: missing keys, named in the file's scheme (timm).
  {
    Model m = make_model(fixture_vit().depth(3));
    auto msg = error_of([&] { load_weights(*m, fixture("vit_timm.safetensors")); });
    EXPECT_NE(msg.find("missing keys (12)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("blocks.2.attn.qkv.weight"), std::string::npos) << msg;
  }
  // Other MLP width: every MLP tensor mismatched, with both shapes.
  {
    Model m = make_model(fixture_vit().mlp_dim(64));
    auto w = m->named_parameters()["blocks.0.mlp.fc1.weight"].clone();
    auto cls = m->named_parameters()["cls_token"].clone();
    auto msg = error_of([&] { load_weights(*m, fixture("vit_torchvision.safetensors")); });
    EXPECT_NE(msg.find("size mismatch (6)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("encoder.layers.encoder_layer_0.mlp.0.weight: file [96, 48], model [64, 48]"), std::string::npos)
        << msg;
    EXPECT_TRUE(torch::equal(m->named_parameters()["blocks.0.mlp.fc1.weight"], w));
    EXPECT_TRUE(torch::equal(m->named_parameters()["cls_token"], cls)) << "a refused load writes nothing";
  }
  // Missing and unexpected together, from an edited state dict.
  {
    auto tensors = core::read_safetensors(fixture("vit_torchvision.safetensors")).tensors;
    tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [](const auto& p) { return p.first == "encoder.ln.bias"; }),
                  tensors.end());
    tensors.emplace_back("module.extra", torch::zeros({2}));
    Model m = make_model(fixture_vit());
    auto msg = error_of([&] { load_state(*m, tensors, "edited", LoadOptions().names("torchvision")); });
    EXPECT_NE(msg.find("missing keys (1): encoder.ln.bias"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected keys (1): module.extra"), std::string::npos) << msg;
  }
  // Keys of no scheme at all: one line asking for --weights-names.
  {
    Model m = make_model(fixture_vit());
    auto msg = error_of([&] { load_state(*m, {{"foo.weight", torch::zeros({1})}}, "junk"); });
    EXPECT_NE(msg.find("--weights-names"), std::string::npos) << msg;
  }
  // torchvision names on an MLP: refused with the reason.
  {
    Model m = make_model(ModelOptions().arch("mlp"));
    auto msg = error_of([&] { load_weights(*m, fixture("vit_torchvision.safetensors"), LoadOptions().names("torchvision")); });
    EXPECT_NE(msg.find("vit model only"), std::string::npos) << msg;
  }
}

TEST(Weights, InitHeadResetKeepsTheFreshClassifier) {
  const auto io = fixture_io();
  Model m = make_model(fixture_vit(/*classes=*/10));
  auto msg = error_of([&] { load_weights(*m, fixture("vit_torchvision.safetensors")); });
  EXPECT_NE(msg.find("heads.head.weight: file [5, 48], model [10, 48]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--init-head reset"), std::string::npos) << msg;
  const auto head = m->named_parameters()["head.weight"].clone();
  const auto report = load_weights(*m, fixture("vit_torchvision.safetensors"), LoadOptions().init_head("reset"));
  EXPECT_TRUE(report.head_kept);
  EXPECT_TRUE(torch::equal(m->named_parameters()["head.weight"], head));
  // The backbone did load: with the 5-class head copied in, the logits are torchvision's.
  Model ref = make_model(fixture_vit());
  load_weights(*ref, fixture("vit_torchvision.safetensors"));
  {
    torch::NoGradGuard g;
    m->named_parameters()["head.weight"].copy_(
        torch::cat({ref->named_parameters()["head.weight"], torch::zeros({5, 48})}, 0));
    m->named_parameters()["head.bias"].copy_(torch::cat({ref->named_parameters()["head.bias"], torch::zeros({5})}, 0));
  }
  EXPECT_LT(max_diff(logits_of(m, io.inputs).slice(1, 0, 5), io.logits), 1e-5);
  // Same class count: reset changes nothing, the head loads.
  Model same = make_model(fixture_vit());
  EXPECT_FALSE(load_weights(*same, fixture("vit_torchvision.safetensors"), LoadOptions().init_head("reset")).head_kept);
}

TEST(Weights, MlpAndCnnRoundTripWithStrataNames) {
  for (const std::string arch : {"mlp", "cnn"}) {
    auto opts = ModelOptions().arch(arch).input_shape({1, 28, 28}).bias(true);
    torch::manual_seed(3);
    Model a = make_model(opts);
    torch::manual_seed(4);
    Model b = make_model(opts);
    const auto x = torch::randn({2, 1, 28, 28});
    for (const std::string format : {"safetensors", "h5"}) {
      const auto path = tmp_file(arch + "." + format);
      save_weights(*a, path, format, WeightNames::kStrata);
      const auto r = load_weights(*b, path);
      EXPECT_EQ(r.names, WeightNames::kStrata);
      EXPECT_TRUE(torch::equal(logits_of(a, x), logits_of(b, x))) << arch << " " << format;
      std::remove(path.c_str());
    }
  }
}

TEST(Weights, NestedHdf5GroupsReadAsDottedKeys) {
  Model src = make_model(fixture_vit());
  load_weights(*src, fixture("vit_torchvision.safetensors"));
  const auto path = tmp_file("nested.h5");
  core::atomic_write_h5(path, [&](H5::H5File& f) {
    for (const auto& [k, t] : export_state(*src, WeightNames::kTimm)) {
      std::string p = k;
      std::replace(p.begin(), p.end(), '.', '/');
      core::write_tensor(f, p, t);
    }
  });
  Model dst = make_model(fixture_vit());
  EXPECT_EQ(load_weights(*dst, path).names, WeightNames::kTimm);
  const auto io = fixture_io();
  EXPECT_LT(max_diff(logits_of(dst, io.inputs), io.logits), 1e-5);
  std::remove(path.c_str());
}

TEST(Weights, NotAWeightFile) {
  const auto path = tmp_file("junk.bin");
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    std::fputs("this is not a checkpoint", f);
    std::fclose(f);
  }
  Model m = make_model(fixture_vit());
  auto msg = error_of([&] { load_weights(*m, path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("neither"), std::string::npos) << msg;
  std::remove(path.c_str());
  EXPECT_NE(error_of([&] { load_weights(*m, path); }).find("no such file"), std::string::npos);
}

TEST(Weights, VitPresets) {
  for (const auto& [name, dim, heads, mlp] :
       std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>>{{"vit-ti16", 192, 3, 768},
                                                                       {"vit-s16", 384, 6, 1536},
                                                                       {"vit-b16", 768, 12, 3072}}) {
    auto o = ModelOptions().arch("vit").input_shape({3, 32, 32});
    apply_vit_preset(o, name);
    EXPECT_EQ(o.patch(), 16) << name;
    EXPECT_EQ(o.dim(), dim) << name;
    EXPECT_EQ(o.depth(), 12) << name;
    EXPECT_EQ(o.heads(), heads) << name;
    EXPECT_EQ(o.vit_mlp_dim(), mlp) << name;
  }
  auto o = ModelOptions();
  EXPECT_NE(error_of([&] { apply_vit_preset(o, "vit-x"); }).find("vit-x"), std::string::npos);
}
