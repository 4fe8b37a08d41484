// strata verify: checks a whole run folder (run/verify.h) and prints one line per file.
#include "run/verify.h"
#include "tools/commands.h"

#include <boost/program_options.hpp>

#include <iostream>

namespace po = boost::program_options;

namespace {

void usage(std::ostream& o, const po::options_description& desc) {
  o << "usage: strata verify runs/NAME [--verbose]\n\n"
       "Checks a run folder: every versions/vNNN.h5 (checksum, format, position, model shapes, and that the\n"
       "newest restores), predictions.h5 (accuracies agree with the versions), subspaces.h5 (every record\n"
       "reads), report.json and metrics.csv (against the versions) and config.ini (parses). One line per\n"
       "file: 'ok' or what is wrong. Exit 0 when sound, 1 on damage, 2 on bad input.\n\n"
    << desc;
}

}  // namespace

int strata_cmd_verify(int argc, char** argv) {
  po::options_description desc("Options");
  desc.add_options()
      ("help,h", "this help")
      ("verbose,v", po::bool_switch(), "also say what was checked for each sound file")
      ("run-dir", po::value<std::string>(), "the run folder (positional)");
  po::positional_options_description pos;
  pos.add("run-dir", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(desc).positional(pos).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "strata verify: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    usage(std::cout, desc);
    return 0;
  }
  if (!vm.count("run-dir")) {
    std::cerr << "strata verify: missing the run folder (runs/NAME)\n";
    usage(std::cerr, desc);
    return 2;
  }
  const std::string dir = vm["run-dir"].as<std::string>();
  strata::run::RunCheck check;
  try {
    check = strata::run::verify_run(dir);
  } catch (const c10::Error& e) {
    std::cerr << "strata verify: " << e.msg() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "strata verify: " << e.what() << "\n";
    return 2;
  }
  const bool verbose = vm["verbose"].as<bool>();
  int damaged = 0;
  for (const auto& f : check.files) {
    damaged += f.ok() ? 0 : 1;
    std::cout << f.file << ": " << (f.ok() ? "ok" : f.problem);
    if (f.ok() && !f.note.empty() && (verbose || f.note.find("not checked") != std::string::npos ||
                                      f.note.find("ignored") != std::string::npos))
      std::cout << " (" << f.note << ")";
    std::cout << "\n";
  }
  std::cout << (damaged ? "damaged: " + std::to_string(damaged) + " of " + std::to_string(check.files.size()) + " files"
                        : "sound: " + std::to_string(check.files.size()) + " files")
            << "\n";
  return damaged ? 1 : 0;
}
