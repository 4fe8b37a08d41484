// `strata subspaces ls|show|angles|plot|export`: inspect a subspaces.h5 store (strata::subspaces::SubspaceStore).
#include <boost/program_options.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <limits>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "core/h5.h"
#include "core/svg.h"
#include "subspaces/basis.h"
#include "subspaces/store.h"
#include "run/config.h"
#include "tools/commands.h"

namespace po = boost::program_options;
namespace ss = strata::subspaces;

namespace {

constexpr const char* kUsage =
    "usage: strata subspaces <command> FILE [options]\n"
    "  ls FILE                                   tasks, layers, ranks\n"
    "  show FILE --layer L [--task T]            rank, energy and spectrum of a layer\n"
    "  angles FILE --layer L [--between additions|memories]\n"
    "                                            principal angles (degrees) between what each task added to the\n"
    "                                            layer's memory (default), or between the stored memories\n"
    "  plot FILE --output DIR                    SVG charts: per layer the cumulative spectrum energy of every\n"
    "                                            task (chosen rank marked), ranks and captured energy per task\n"
    "  export FILE --layer L --task T --format csv|npy --output PATH [--dataset basis|singular_values|extra/NAME]\n";

struct Args {
  std::string command, file, layer, task, format, output, dataset = "basis", between = "additions";
};

Args parse(int argc, char** argv) {
  Args a;
  po::options_description opts("options");
  opts.add_options()("command", po::value(&a.command))("file", po::value(&a.file))(
      "layer", po::value(&a.layer), "layer name")("task", po::value(&a.task), "task name")(
      "format", po::value(&a.format), "csv or npy")("output,o", po::value(&a.output), "output path")(
      "dataset", po::value(&a.dataset)->default_value("basis"), "basis, singular_values or extra/NAME")(
      "between", po::value(&a.between)->default_value("additions"), "additions or memories");
  po::positional_options_description pos;
  pos.add("command", 1).add("file", 1);
  po::variables_map vm;
  for (int i = 1; i < argc; ++i) strata::run::reject_option_placeholders(argv[i], "command line");
  po::store(po::command_line_parser(argc, argv).options(opts).positional(pos).run(), vm);
  po::notify(vm);
  return a;
}

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

std::string fmt(double v, int prec = 4) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(prec) << v;
  return os.str();
}

int cmd_ls(const ss::SubspaceStore& store) {
  std::cout << store.path() << "\n";
  for (const auto& task : store.tasks()) {
    std::cout << "task " << task << "\n";
    for (const auto& layer : store.layers(task)) {
      auto r = store.get(task, layer);
      std::cout << "  " << std::left << std::setw(28) << layer << " rank " << std::setw(5) << r.rank() << " dim "
                << std::setw(6) << r.basis.size(0) << " side " << std::setw(6) << r.side << " energy "
                << fmt(r.captured_energy) << " threshold " << fmt(r.threshold) << " method " << r.method;
      if (!r.extra.empty()) std::cout << " extra " << r.extra.size();
      std::cout << "\n";
    }
  }
  return 0;
}

int cmd_show(const ss::SubspaceStore& store, const Args& a) {
  require(!a.layer.empty(), "show needs --layer");
  std::vector<std::string> tasks = a.task.empty() ? store.tasks() : std::vector<std::string>{a.task};
  int shown = 0;
  for (const auto& task : tasks) {
    if (!store.has(task, a.layer)) {
      require(a.task.empty(), "no layer '" + a.layer + "' in task '" + task + "'");
      continue;
    }
    auto r = store.get(task, a.layer);
    ++shown;
    std::cout << "task " << task << " layer " << a.layer << "\n"
              << "  rank " << r.rank() << " of dim " << r.basis.size(0) << ", side " << r.side << ", method "
              << r.method << "\n"
              << "  captured energy " << fmt(r.captured_energy) << " (threshold " << fmt(r.threshold) << ")\n";
    auto s = r.singular_values.to(torch::kFloat64);
    std::cout << "  spectrum (" << s.numel() << " singular values; cumulative energy):\n";
    if (s.numel() > 0) {
      auto e = s.square();
      double total = e.sum().item<double>();
      auto cum = e.cumsum(0);
      for (int64_t i = 0; i < s.numel(); ++i)
        std::cout << "    " << std::setw(4) << i + 1 << "  " << std::setw(14) << fmt(s[i].item<double>(), 6) << "  "
                  << (total > 0 ? fmt(cum[i].item<double>() / total) : std::string("-")) << "\n";
    }
    for (const auto& [name, t] : r.extra) std::cout << "  extra " << name << " " << t.sizes() << " " << t.dtype() << "\n";
  }
  require(shown > 0, "no task has layer '" + a.layer + "'");
  return 0;
}

int cmd_angles(const ss::SubspaceStore& store, const Args& a) {
  require(!a.layer.empty(), "angles needs --layer");
  require(a.between == "additions" || a.between == "memories",
          "--between must be additions or memories, got '" + a.between + "'");
  // A GPM-style memory grows by appending, so task t's stored basis contains task t-1's and the
  // angles between stored memories are 0 by construction; what each task added is what differs.
  std::vector<std::pair<std::string, torch::Tensor>> bases;
  torch::Tensor previous;
  for (const auto& task : store.tasks()) {
    if (!store.has(task, a.layer)) continue;
    const torch::Tensor basis = store.get(task, a.layer).basis;
    if (a.between == "memories") {
      bases.emplace_back(task, basis);
      continue;
    }
    require(!previous.defined() || previous.size(0) == basis.size(0),
            "layer '" + a.layer + "' changes dimension at task '" + task + "'");
    bases.emplace_back(task, ss::added_directions(previous, basis));
    previous = basis;
  }
  require(bases.size() >= 2, "angles needs layer '" + a.layer + "' in at least two tasks (found " +
                                 std::to_string(bases.size()) + ")");
  std::cout << "principal angles (degrees) for layer " << a.layer << " between "
            << (a.between == "additions" ? "the directions each task added" : "the stored memories") << "\n";
  for (size_t i = 0; i < bases.size(); ++i) {
    for (size_t j = i + 1; j < bases.size(); ++j) {
      std::cout << bases[i].first << " (rank " << bases[i].second.size(1) << ") vs " << bases[j].first << " (rank "
                << bases[j].second.size(1) << "):";
      if (bases[i].second.size(0) != bases[j].second.size(0)) {
        std::cout << " dimensions differ\n";
        continue;
      }
      auto ang = ss::principal_angles(bases[i].second, bases[j].second) * (180.0 / M_PI);
      if (ang.numel() == 0) {
        std::cout << " (nothing added)\n";
        continue;
      }
      std::cout << " min " << fmt(ang.min().item<double>(), 2) << " mean " << fmt(ang.mean().item<double>(), 2)
                << " max " << fmt(ang.max().item<double>(), 2) << "\n   ";
      for (int64_t k = 0; k < ang.numel(); ++k) std::cout << " " << fmt(ang[k].item<double>(), 2);
      std::cout << "\n";
    }
  }
  return 0;
}

// File-name form of a layer path ("blocks.0.attn.proj" stays, '/' and odd characters become '_').
std::string file_part(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
  return out;
}

int cmd_plot(const ss::SubspaceStore& store, const Args& a) {
  require(!a.output.empty(), "plot needs --output DIR");
  const auto tasks = store.tasks();
  require(!tasks.empty(), "the store holds no task");
  std::vector<std::string> layers;
  for (const auto& t : tasks)
    for (const auto& l : store.layers(t))
      if (std::find(layers.begin(), layers.end(), l) == layers.end()) layers.push_back(l);
  std::filesystem::create_directories(a.output);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto ranks = torch::full({static_cast<int64_t>(tasks.size()), static_cast<int64_t>(layers.size())}, nan, torch::kDouble);
  auto energy = ranks.clone();
  std::vector<std::string> written;
  for (size_t l = 0; l < layers.size(); ++l) {
    std::vector<strata::core::LineSeries> series;
    double threshold = nan;
    for (size_t t = 0; t < tasks.size(); ++t) {
      if (!store.has(tasks[t], layers[l])) continue;
      const auto r = store.get(tasks[t], layers[l]);
      ranks[t][l] = static_cast<double>(r.rank());
      energy[t][l] = r.captured_energy;
      threshold = r.threshold;
      strata::core::LineSeries s{tasks[t], {}, -1};
      if (r.singular_values.defined() && r.singular_values.numel() > 0) {
        const auto e = r.singular_values.to(torch::kDouble).square();
        const double total = e.sum().item<double>();
        const auto cum = (e.cumsum(0) / (total > 0 ? total : 1.0)).contiguous();
        s.y.assign(cum.data_ptr<double>(), cum.data_ptr<double>() + cum.numel());
      }
      series.push_back(std::move(s));
    }
    if (series.empty()) continue;
    const std::string file = "spectrum_" + file_part(layers[l]) + ".svg";
    strata::core::atomic_write_text(
        a.output + "/" + file,
        strata::core::line_chart_svg(series, strata::core::LineChartOptions()
                                                 .title("Layer " + layers[l] + ": cumulative energy of the spectrum each task's rank was chosen from")
                                                 .x_label("singular value index")
                                                 .y_label("cumulative energy")
                                                 .reference(threshold)));
    written.push_back(file);
  }
  const auto heat = [&](const std::string& file, const torch::Tensor& m, const std::string& title, double scale,
                        int decimals, const std::string& palette) {
    strata::core::atomic_write_text(a.output + "/" + file,
                                    strata::core::heatmap_svg(m, strata::core::HeatmapOptions()
                                                                     .title(title)
                                                                     .row_axis("task")
                                                                     .column_axis("layer")
                                                                     .row_labels(tasks)
                                                                     .column_labels(layers)
                                                                     .scale(scale)
                                                                     .decimals(decimals)
                                                                     .palette(palette)));
    written.push_back(file);
  };
  heat("ranks.svg", ranks, "Rank of the stored basis per task and layer", 1.0, 0, "blues");
  heat("captured_energy.svg", energy, "Captured energy (%) per task and layer", 100.0, 1, "greens");
  for (const auto& f : written) std::cout << "wrote " << a.output << "/" << f << "\n";
  return 0;
}

std::string npy_descr(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "<f4";
    case torch::kFloat64: return "<f8";
    case torch::kInt64: return "<i8";
    case torch::kInt32: return "<i4";
    case torch::kUInt8: return "|u1";
    case torch::kBool: return "|b1";
    default: throw std::invalid_argument("cannot export dtype to npy");
  }
}

void write_npy(const torch::Tensor& t, const std::string& path) {
  std::string shape = "(";
  for (int64_t i = 0; i < t.dim(); ++i) shape += std::to_string(t.size(i)) + (t.dim() == 1 || i + 1 < t.dim() ? "," : "");
  shape += ")";
  std::string header = "{'descr': '" + npy_descr(t.scalar_type()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  strata::core::AtomicFile af(path);
  {
    std::ofstream out(af.tmp_path(), std::ios::binary);
    require(static_cast<bool>(out), "cannot write '" + af.tmp_path() + "'");
    out.write("\x93NUMPY\x01\x00", 8);
    const uint16_t len = static_cast<uint16_t>(header.size());
    const char le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
    out.write(le, 2);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    auto c = t.contiguous();
    out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
    require(static_cast<bool>(out), "write to '" + af.tmp_path() + "' failed");
  }
  af.commit();
}

void write_csv(const torch::Tensor& t, const std::string& path) {
  require(t.dim() <= 2, "csv export needs a 0-, 1- or 2-D tensor");
  auto m = t.to(torch::kFloat64).reshape({t.dim() == 2 ? t.size(0) : 1, -1}).contiguous();
  strata::core::AtomicFile af(path);
  {
    std::ofstream out(af.tmp_path());
    require(static_cast<bool>(out), "cannot write '" + af.tmp_path() + "'");
    out << std::setprecision(9);
    auto acc = m.accessor<double, 2>();
    for (int64_t i = 0; i < m.size(0); ++i) {
      for (int64_t j = 0; j < m.size(1); ++j) out << (j ? "," : "") << acc[i][j];
      out << "\n";
    }
    require(static_cast<bool>(out), "write to '" + af.tmp_path() + "' failed");
  }
  af.commit();
}

int cmd_export(const ss::SubspaceStore& store, const Args& a) {
  require(!a.layer.empty() && !a.task.empty(), "export needs --layer and --task");
  require(a.format == "csv" || a.format == "npy", "export needs --format csv|npy");
  require(!a.output.empty(), "export needs --output PATH");
  auto r = store.get(a.task, a.layer);
  torch::Tensor t;
  if (a.dataset == "basis") {
    t = r.basis;
  } else if (a.dataset == "singular_values") {
    t = r.singular_values;
  } else if (a.dataset.rfind("extra/", 0) == 0 && r.extra.count(a.dataset.substr(6))) {
    t = r.extra.at(a.dataset.substr(6));
  } else {
    throw std::invalid_argument("no dataset '" + a.dataset + "' for task '" + a.task + "', layer '" + a.layer + "'");
  }
  if (a.format == "csv")
    write_csv(t, a.output);
  else
    write_npy(t, a.output);
  std::cout << "wrote " << a.dataset << " " << t.sizes() << " to " << a.output << "\n";
  return 0;
}

}  // namespace

int strata_cmd_subspaces(int argc, char** argv) {
  try {
    Args a = parse(argc, argv);  // argv[0] = "subspaces" (skipped as the program name)
    if (a.command.empty() || a.command == "help" || a.command == "--help") {
      std::cout << kUsage;
      return a.command.empty() ? 2 : 0;
    }
    require(a.command == "ls" || a.command == "show" || a.command == "angles" || a.command == "export" ||
                a.command == "plot",
            "unknown command '" + a.command + "'");
    require(!a.file.empty(), a.command + " needs FILE");
    auto store = ss::SubspaceStore::open(a.file);
    if (a.command == "ls") return cmd_ls(store);
    if (a.command == "show") return cmd_show(store, a);
    if (a.command == "angles") return cmd_angles(store, a);
    if (a.command == "plot") return cmd_plot(store, a);
    return cmd_export(store, a);
  } catch (const c10::Error& e) {
    std::cerr << "strata subspaces: " << e.what_without_backtrace() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "strata subspaces: " << e.what() << "\n" << kUsage;
  }
  return 1;
}
