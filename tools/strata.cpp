// strata: the command-line front end. Dispatches to one sub-command per file (tools/cmd_*.cpp).
#include "tools/commands.h"

#include <cstring>
#include <iostream>
#include <string>

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

const Command kCommands[] = {
    {"train", strata_cmd_train, "train a model over a task stream (strata train --help)"},
    {"methods", strata_cmd_methods, "list the registered methods and their options"},
    {"subspaces", strata_cmd_subspaces, "inspect a subspaces.h5 store (ls, show, angles, export)"},
    {"eval", strata_cmd_eval, "evaluate a stored version (runs/NAME/versions/vNNN.h5) or a weight file on a stream"},
    {"compare", strata_cmd_compare, "compare two model versions for negative flips; gate a release"},
    {"export", strata_cmd_export, "write a version as safetensors / HDF5 weights (strata, torchvision or timm names)"},
    {"verify", strata_cmd_verify, "check a run folder (versions, predictions, subspaces, report) for damage"},
};

void usage(std::ostream& o) {
  o << "usage: strata <command> [options]\n\ncommands:\n";
  for (const auto& c : kCommands) o << "  " << c.name << std::string(12 - std::strlen(c.name), ' ') << c.help << "\n";
  o << "\nstrata <command> --help shows a command's options.\n";
}

}  // namespace

int main(int argc, char** argv) {
  // No sub-command: the main job, a short default training run.
  if (argc < 2) return strata_cmd_train(1, argv);
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(std::cout);
    return 0;
  }
  for (const auto& c : kCommands)
    if (cmd == c.name) return c.run(argc - 1, argv + 1);
  std::cerr << "strata: unknown command '" << cmd << "'\n";
  usage(std::cerr);
  return 2;
}
