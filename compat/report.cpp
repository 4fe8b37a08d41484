#include "compat/report.h"

#include "compat/stats.h"
#include "core/h5.h"
#include "core/svg.h"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <sstream>

namespace strata::compat {
namespace {

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

nlohmann::json make_report_json(const FlipReport& report, const ReportHeader& header, double alpha,
                                const GateResult* gate) {
  const nlohmann::json body = report.to_json(alpha);
  const nlohmann::json& overall = body["overall"];
  nlohmann::json j;
  j["schema_version"] = kReportSchema;
  j["created_at"] = utc_now();
  j["tool"] = {{"name", "strata"}, {"module", "compat"}};
  j["old"] = header.old_version;
  j["new"] = header.new_version;
  j["eval_set"] = {{"id", header.eval_set}, {"n", report.overall.n()}};
  j["scorer"] = "exact match of the predicted class";
  j["n"] = report.overall.n();
  j["alpha"] = alpha;
  j["counts"] = overall["counts"];
  j["metrics"] = overall["metrics"];
  j["tests"] = {{"mcnemar", overall["mcnemar"]}};
  j["per_task"] = body["per_task"];
  j["per_class"] = body["per_class"];
  j["multiplicity"] = body["multiplicity"];
  j["warnings"] = body["warnings"];
  j["scored"] = header.scored;
  if (gate != nullptr) j["gate"] = gate->to_json();
  j["artifacts"] = header.artifacts;
  return j;
}

void write_json(const std::string& path, const nlohmann::json& doc) {
  core::atomic_write_text(path, doc.dump(2) + "\n");
}

int64_t write_flips_csv(const std::string& path, const FlipInputs& in) {
  check_inputs(in);
  torch::NoGradGuard no_grad;
  const torch::Tensor types = flip_types(in.labels, in.old_pred, in.new_pred);
  const torch::Tensor keep = types.eq(static_cast<int64_t>(FlipType::kNegative)) |
                             types.eq(static_cast<int64_t>(FlipType::kPositive)) |
                             types.eq(static_cast<int64_t>(FlipType::kWrongChanged));
  torch::Tensor rows = keep.nonzero().reshape({-1});
  // Order: by old confidence descending (stable), then stably by flip type NF(1) < PF(2) < WW_changed(4).
  if (in.old_conf.defined() && rows.numel() > 0) {
    const torch::Tensor conf = in.old_conf.to(torch::kDouble).index_select(0, rows);
    rows = rows.index_select(0, std::get<1>(torch::sort(conf, /*stable=*/true, /*dim=*/0, /*descending=*/true)));
  }
  if (rows.numel() > 0)
    rows = rows.index_select(0, std::get<1>(torch::sort(types.index_select(0, rows), /*stable=*/true, 0, false)));

  auto as_long = [](const torch::Tensor& t) { return t.to(torch::kLong).contiguous(); };
  auto as_double = [](const torch::Tensor& t) { return t.to(torch::kDouble).contiguous(); };
  const torch::Tensor y = as_long(in.labels), a = as_long(in.old_pred), b = as_long(in.new_pred),
                      t = types.contiguous(), r = as_long(rows);
  const torch::Tensor ids = in.ids.defined() ? as_long(in.ids) : torch::Tensor();
  const torch::Tensor grp = in.groups.defined() ? as_long(in.groups) : torch::Tensor();
  const torch::Tensor oc = in.old_conf.defined() ? as_double(in.old_conf) : torch::Tensor();
  const torch::Tensor nc = in.new_conf.defined() ? as_double(in.new_conf) : torch::Tensor();

  std::ostringstream f;
  f << "item_id,task_id,label,old_pred,new_pred,old_correct,new_correct,flip_type,old_conf,new_conf\n";
  f << std::setprecision(6);
  const int64_t* rp = r.data_ptr<int64_t>();
  for (int64_t k = 0; k < r.numel(); ++k) {
    const int64_t i = rp[k];
    const int64_t yi = y.data_ptr<int64_t>()[i], ai = a.data_ptr<int64_t>()[i], bi = b.data_ptr<int64_t>()[i];
    f << (ids.defined() ? ids.data_ptr<int64_t>()[i] : i) << ',';
    if (grp.defined()) f << grp.data_ptr<int64_t>()[i];
    f << ',' << yi << ',' << ai << ',' << bi << ',' << (ai == yi ? 1 : 0) << ',' << (bi == yi ? 1 : 0) << ','
      << to_string(static_cast<FlipType>(t.data_ptr<int64_t>()[i])) << ',';
    if (oc.defined()) f << oc.data_ptr<double>()[i];
    f << ',';
    if (nc.defined()) f << nc.data_ptr<double>()[i];
    f << '\n';
  }
  core::atomic_write_text(path, f.str());
  return r.numel();
}

void write_nfr_heatmap_svg(const std::string& path, const torch::Tensor& matrix,
                           const std::vector<std::string>& labels) {
  TORCH_CHECK(matrix.dim() == 2 && matrix.size(0) == matrix.size(1) && matrix.size(0) > 0,
              "strata::compat::write_nfr_heatmap_svg(): matrix must be [V, V], got ", matrix.sizes());
  std::vector<std::string> names = labels;
  if (names.empty())
    for (int64_t i = 0; i < matrix.size(0); ++i) names.push_back("v" + std::to_string(i));
  core::atomic_write_text(path, core::heatmap_svg(matrix, core::HeatmapOptions()
                                                              .title("NFR(old row \u2192 new column), % of items")
                                                              .row_axis("old version")
                                                              .column_axis("new version")
                                                              .row_labels(names)
                                                              .column_labels(names)));
}

void write_task_flips_svg(const std::string& path, const FlipReport& report) {
  std::vector<SliceCounts> slices = report.per_group;
  const bool overall_only = slices.empty();
  if (overall_only) slices.push_back({0, report.overall});
  // Separate scales: a task the old version never learned shows thousands of PF, the tasks it knew a few
  // dozen NF; one shared scale would draw the NF bars as nothing.
  int64_t pf_max = 1, nf_max = 1;
  for (const auto& s : slices) {
    pf_max = std::max(pf_max, s.counts.n01);
    nf_max = std::max(nf_max, s.counts.n10);
  }
  const int bar = 28, gap = 22, left = 70, top = 40, half = 150;
  const int width = left + static_cast<int>(slices.size()) * (bar + gap) + 20;
  const int axis = top + half + 14, height = axis + half + 54;
  auto h = [&](int64_t c, int64_t vmax) {
    // A non-zero count is never drawn as nothing.
    const int px = static_cast<int>(std::lround(static_cast<double>(c) / vmax * half));
    return c > 0 ? std::max(px, 1) : 0;
  };

  std::ostringstream f;
  f << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << std::max(width, 420) << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  f << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  f << "<text x=\"10\" y=\"18\" font-size=\"13\">Flips per task: PF up (green), NF down (red); each half has "
       "its own scale</text>\n";
  f << "<text x=\"" << left - 6 << "\" y=\"" << top + 4 << "\" text-anchor=\"end\" fill=\"#2e7d32\">" << pf_max
    << "</text>\n";
  f << "<text x=\"" << left - 6 << "\" y=\"" << axis + 4 << "\" text-anchor=\"end\">0</text>\n";
  f << "<text x=\"" << left - 6 << "\" y=\"" << axis + half + 4 << "\" text-anchor=\"end\" fill=\"#c62828\">&#8722;"
    << nf_max << "</text>\n";
  f << "<text x=\"12\" y=\"" << axis - half / 2 << "\" transform=\"rotate(-90 12 " << axis - half / 2
    << ")\" text-anchor=\"middle\" fill=\"#2e7d32\">PF (0.." << pf_max << ")</text>\n";
  f << "<text x=\"12\" y=\"" << axis + half / 2 << "\" transform=\"rotate(-90 12 " << axis + half / 2
    << ")\" text-anchor=\"middle\" fill=\"#c62828\">NF (0..&#8722;" << nf_max << ")</text>\n";
  for (size_t k = 0; k < slices.size(); ++k) {
    const int x = left + static_cast<int>(k) * (bar + gap) + gap / 2;
    const int64_t pf = slices[k].counts.n01, nf = slices[k].counts.n10;
    const int up = h(pf, pf_max), down = h(nf, nf_max);
    f << "<rect x=\"" << x << "\" y=\"" << axis - up << "\" width=\"" << bar << "\" height=\"" << up
      << "\" fill=\"#2e7d32\"><title>PF " << pf << "</title></rect>\n";
    f << "<text x=\"" << x + bar / 2 << "\" y=\"" << axis - up - 3 << "\" text-anchor=\"middle\" font-size=\"9\">"
      << pf << "</text>\n";
    f << "<rect x=\"" << x << "\" y=\"" << axis << "\" width=\"" << bar << "\" height=\"" << down
      << "\" fill=\"#c62828\"><title>NF " << nf << "</title></rect>\n";
    f << "<text x=\"" << x + bar / 2 << "\" y=\"" << axis + down + 11
      << "\" text-anchor=\"middle\" font-size=\"9\">" << (nf > 0 ? "&#8722;" : "") << nf << "</text>\n";
    f << "<text x=\"" << x + bar / 2 << "\" y=\"" << height - 14 << "\" text-anchor=\"middle\">"
      << (overall_only ? std::string("all") : "t" + std::to_string(slices[k].key)) << "</text>\n";
  }
  f << "<line x1=\"" << left << "\" y1=\"" << axis << "\" x2=\"" << width - 10 << "\" y2=\"" << axis
    << "\" stroke=\"black\"/>\n";
  f << "</svg>\n";
  core::atomic_write_text(path, f.str());
}

}  // namespace strata::compat
