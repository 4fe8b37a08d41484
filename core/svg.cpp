#include "core/svg.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace strata::core {

std::string xml_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

namespace {

std::string fixed(double v, int decimals) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(decimals) << v;
  return s.str();
}

// White (t = 0) to the palette's dark end (t = 1).
std::string ramp(double t, const std::string& palette) {
  int dark[3] = {165, 0, 0};
  if (palette == "greens") dark[0] = 0, dark[1] = 109, dark[2] = 44;
  if (palette == "blues") dark[0] = 8, dark[1] = 48, dark[2] = 107;
  std::ostringstream s;
  s << "rgb(";
  for (int c = 0; c < 3; ++c) s << (c ? "," : "") << std::lround(255 - t * (255 - dark[c]));
  s << ")";
  return s.str();
}

}  // namespace

std::string heatmap_svg(const torch::Tensor& matrix, const HeatmapOptions& o) {
  TORCH_CHECK(matrix.dim() == 2 && matrix.size(0) > 0 && matrix.size(1) > 0,
              "strata::core::heatmap_svg(): matrix must be [R, C] with R, C > 0, got ", matrix.sizes());
  const int64_t rows = matrix.size(0), cols = matrix.size(1);
  TORCH_CHECK(o.row_labels().empty() || static_cast<int64_t>(o.row_labels().size()) == rows,
              "strata::core::heatmap_svg(): ", o.row_labels().size(), " row labels for ", rows, " rows");
  TORCH_CHECK(o.column_labels().empty() || static_cast<int64_t>(o.column_labels().size()) == cols,
              "strata::core::heatmap_svg(): ", o.column_labels().size(), " column labels for ", cols, " columns");
  TORCH_CHECK(o.palette() == "reds" || o.palette() == "greens" || o.palette() == "blues",
              "strata::core::heatmap_svg(): unknown palette '", o.palette(), "'");
  const torch::Tensor m = matrix.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = m.data_ptr<double>();
  double vmax = o.vmax();
  if (vmax <= 0)
    for (int64_t i = 0; i < rows * cols; ++i)
      if (std::isfinite(p[i])) vmax = std::max(vmax, p[i]);
  auto label = [](const std::vector<std::string>& names, int64_t i) {
    return names.empty() ? std::to_string(i) : names[static_cast<size_t>(i)];
  };
  const int cell = 48, left = 90, top = 70;
  const int64_t width = left + cell * cols + 20, height = top + cell * rows + 40;

  std::ostringstream f;
  f << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << std::max<int64_t>(width, 360) << "\" height=\""
    << height << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  f << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  f << "<text x=\"10\" y=\"18\" font-size=\"13\">" << xml_escape(o.title()) << "</text>\n";
  f << "<text x=\"" << left + cell * cols / 2 << "\" y=\"" << top - 28 << "\" text-anchor=\"middle\">"
    << xml_escape(o.column_axis()) << "</text>\n";
  f << "<text x=\"14\" y=\"" << top + cell * rows / 2 << "\" transform=\"rotate(-90 14 " << top + cell * rows / 2
    << ")\" text-anchor=\"middle\">" << xml_escape(o.row_axis()) << "</text>\n";
  for (int64_t j = 0; j < cols; ++j)
    f << "<text x=\"" << left + cell * j + cell / 2 << "\" y=\"" << top - 8 << "\" text-anchor=\"middle\">"
      << xml_escape(label(o.column_labels(), j)) << "</text>\n";
  for (int64_t i = 0; i < rows; ++i)
    f << "<text x=\"" << left - 6 << "\" y=\"" << top + cell * i + cell / 2 + 4 << "\" text-anchor=\"end\">"
      << xml_escape(label(o.row_labels(), i)) << "</text>\n";
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const double x = p[i * cols + j];
      const bool ok = std::isfinite(x);
      const double t = ok && vmax > 0 ? std::clamp(x / vmax, 0.0, 1.0) : 0.0;
      const int64_t cx = left + cell * j, cy = top + cell * i;
      f << "<rect x=\"" << cx << "\" y=\"" << cy << "\" width=\"" << cell << "\" height=\"" << cell << "\" fill=\""
        << (ok ? ramp(t, o.palette()) : std::string("rgb(220,220,220)")) << "\" stroke=\"#888\"/>\n";
      f << "<text x=\"" << cx + cell / 2 << "\" y=\"" << cy + cell / 2 + 4 << "\" text-anchor=\"middle\" fill=\""
        << (t > 0.6 ? "white" : "black") << "\">" << (ok ? fixed(o.scale() * x, o.decimals()) : std::string("-"))
        << "</text>\n";
    }
  f << "</svg>\n";
  return f.str();
}

std::string line_chart_svg(const std::vector<LineSeries>& series, const LineChartOptions& o) {
  TORCH_CHECK(!series.empty(), "strata::core::line_chart_svg(): no series");
  TORCH_CHECK(o.y_max() > o.y_min(), "strata::core::line_chart_svg(): y_max ", o.y_max(), " <= y_min ", o.y_min());
  size_t n = 1;
  for (const auto& s : series) n = std::max(n, s.y.size());
  static const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  const int left = 60, top = 36, plot_w = 480, plot_h = 260, legend_w = 170;
  const int width = left + plot_w + legend_w, height = top + plot_h + 50;
  auto px = [&](double x) { return left + (n > 1 ? (x - 1) / static_cast<double>(n - 1) : 0.5) * plot_w; };
  auto py = [&](double y) {
    const double t = std::clamp((y - o.y_min()) / (o.y_max() - o.y_min()), 0.0, 1.0);
    return top + (1 - t) * plot_h;
  };
  std::ostringstream f;
  f << std::setprecision(5);
  f << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  f << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  f << "<text x=\"10\" y=\"18\" font-size=\"13\">" << xml_escape(o.title()) << "</text>\n";
  f << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
    << "\" fill=\"none\" stroke=\"#888\"/>\n";
  for (int k = 0; k <= 4; ++k) {
    const double y = o.y_min() + (o.y_max() - o.y_min()) * k / 4.0;
    f << "<text x=\"" << left - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">" << fixed(y, 2) << "</text>\n";
  }
  f << "<text x=\"" << left << "\" y=\"" << top + plot_h + 16 << "\" text-anchor=\"middle\">1</text>\n";
  f << "<text x=\"" << left + plot_w << "\" y=\"" << top + plot_h + 16 << "\" text-anchor=\"middle\">" << n
    << "</text>\n";
  f << "<text x=\"" << left + plot_w / 2 << "\" y=\"" << top + plot_h + 34 << "\" text-anchor=\"middle\">"
    << xml_escape(o.x_label()) << "</text>\n";
  f << "<text x=\"14\" y=\"" << top + plot_h / 2 << "\" transform=\"rotate(-90 14 " << top + plot_h / 2
    << ")\" text-anchor=\"middle\">" << xml_escape(o.y_label()) << "</text>\n";
  if (std::isfinite(o.reference()))
    f << "<line x1=\"" << left << "\" y1=\"" << py(o.reference()) << "\" x2=\"" << left + plot_w << "\" y2=\""
      << py(o.reference()) << "\" stroke=\"#444\" stroke-dasharray=\"4 3\"/>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    const char* c = colours[s % (sizeof colours / sizeof *colours)];
    const auto& y = series[s].y;
    if (!y.empty()) {
      f << "<polyline fill=\"none\" stroke=\"" << c << "\" stroke-width=\"1.5\" points=\"";
      for (size_t i = 0; i < y.size(); ++i) f << (i ? " " : "") << px(i + 1.0) << "," << py(y[i]);
      f << "\"/>\n";
      const int64_t m = series[s].marker;
      if (m >= 0 && m < static_cast<int64_t>(y.size()))
        f << "<circle cx=\"" << px(m + 1.0) << "\" cy=\"" << py(y[static_cast<size_t>(m)]) << "\" r=\"3.5\" fill=\"" << c
          << "\"/>\n";
    }
    const int ly = top + 12 + 16 * static_cast<int>(s);
    f << "<line x1=\"" << left + plot_w + 12 << "\" y1=\"" << ly - 4 << "\" x2=\"" << left + plot_w + 30 << "\" y2=\""
      << ly - 4 << "\" stroke=\"" << c << "\" stroke-width=\"2\"/>\n";
    f << "<text x=\"" << left + plot_w + 34 << "\" y=\"" << ly << "\">" << xml_escape(series[s].name) << "</text>\n";
  }
  f << "</svg>\n";
  return f.str();
}

}  // namespace strata::core
