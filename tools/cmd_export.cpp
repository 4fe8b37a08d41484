// strata export: writes a stored model version as a standard weight file (safetensors or an HDF5
// state_dict) under Strata, torchvision or timm names, adapters merged into the base weights, so
// PyTorch code loads it with load_state_dict.
#include "adapters/inject.h"
#include "checkpoints/version_store.h"
#include "models/weights.h"
#include "run/runner.h"
#include "run/config.h"
#include "tools/commands.h"

#include <boost/program_options.hpp>

#include <iostream>

namespace po = boost::program_options;
using namespace strata;

namespace {

void usage(std::ostream& o, const po::options_description& desc) {
  o << "usage: strata export VERSION.h5 -o FILE [--format safetensors|h5] [--names strata|torchvision|timm]\n\n"
       "Restores a stored version (runs/NAME/versions/vNNN.h5) as `strata eval` does, merges the method's\n"
       "adapters into the base weights, and writes the model's parameters and buffers as a weight file:\n"
       "safetensors, or an HDF5 state_dict (one dataset per dotted key, as h5py writes {k: v.numpy()}).\n"
       "torchvision and timm names exist for the ViT (q, k, v fused into one in_proj / qkv tensor).\n"
       "The version's stream is built to learn the input shape (stream options can be overridden).\n\n"
    << desc;
}

}  // namespace

int strata_cmd_export(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("help,h", "this help")
      ("output,o", po::value<std::string>(), "the weight file to write (replaced atomically)")
      ("format", po::value<std::string>()->default_value("safetensors"), "safetensors | h5")
      ("names", po::value<std::string>()->default_value("strata"), "strata | torchvision | timm")
      ("data-dir", po::value<std::string>(), "folder of the Fashion-MNIST IDX files (default: the version's)")
      ("version-file", po::value<std::string>(), "the version file (positional)");
  po::positional_options_description pos;
  pos.add("version-file", 1);
  try {
    po::variables_map vm;
    for (int i = 1; i < argc; ++i) strata::run::reject_option_placeholders(argv[i], "command line");
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
      usage(std::cout, desc);
      return 0;
    }
    if (!vm.count("version-file") || !vm.count("output")) {
      std::cerr << "strata export: " << (vm.count("version-file") ? "missing -o FILE" : "missing VERSION (a versions/vNNN.h5 file)")
                << "\n";
      usage(std::cerr, desc);
      return 2;
    }
    const std::string file = vm["version-file"].as<std::string>(), out = vm["output"].as<std::string>();
    const std::string format = vm["format"].as<std::string>();
    TORCH_CHECK(format == "safetensors" || format == "h5", "option --format: '", format, "' (valid: safetensors, h5)");
    const auto names = models::weight_names_from_string(vm["names"].as<std::string>());

    run::LoadVersionOptions lo;
    if (vm.count("data-dir")) lo.overrides = {"--data-dir", vm["data-dir"].as<std::string>()};
    run::LoadedVersion lv = run::load_version(file, lo);
    const checkpoints::Version& v = lv.version;
    const int64_t merged = adapters::merge_all(*lv.model);
    models::save_weights(*lv.model, out, format, names,
                         {{"strata_version_file", file}, {"strata_method", v.method},
                          {"strata_version", std::to_string(v.version)}});
    std::cout << "exported version " << v.version << " (" << file << ", method " << v.method << ", model "
              << lv.config.model.arch() << (merged ? ", " + std::to_string(merged) + " adapters merged" : std::string())
              << ") to " << out << " (" << format << ", " << models::to_string(names) << " names)\n";
    return 0;
  } catch (const c10::Error& e) {
    std::cerr << "strata export: " << e.msg() << "\n";
  } catch (const po::error& e) {
    std::cerr << "strata export: " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "strata export: " << e.what() << "\n";
  }
  return 1;
}
