#pragma once
// Small SVG charts for run folders and comparison reports: plain text, readable in any browser,
// no plotting dependency. The caller writes the text (core::atomic_write_text).
#include <torch/torch.h>

#include <limits>
#include <string>
#include <vector>

namespace strata::core {

/// `s` with & < > " escaped for XML text and attribute values.
std::string xml_escape(const std::string& s);

struct HeatmapOptions {
  TORCH_ARG(std::string, title);
  TORCH_ARG(std::string, row_axis);
  TORCH_ARG(std::string, column_axis);
  /// One label per row / column; empty = "0", "1", ...
  TORCH_ARG(std::vector<std::string>, row_labels);
  TORCH_ARG(std::vector<std::string>, column_labels);
  /// Cell text = value · scale, with `decimals` decimals (scale 100: fractions shown as percent).
  TORCH_ARG(double, scale) = 100.0;
  TORCH_ARG(int, decimals) = 1;
  /// Value of the darkest colour; 0 = the largest finite value in the matrix.
  TORCH_ARG(double, vmax) = 0.0;
  /// Colour ramp from white: "reds" (bad when high: flips) | "greens" (good when high: accuracy) | "blues".
  TORCH_ARG(std::string, palette) = "reds";
};

/// SVG heatmap of a [R, C] matrix (row i, column j at cell (i, j)). Non-finite cells (NaN: not
/// measured) are grey and labelled "-".
std::string heatmap_svg(const torch::Tensor& matrix, const HeatmapOptions& options);

struct LineSeries {
  std::string name;
  std::vector<double> y;  ///< y[i] is drawn at x = i + 1
  int64_t marker = -1;    ///< index of a point drawn as a dot (e.g. the chosen rank), -1 = none
};

struct LineChartOptions {
  TORCH_ARG(std::string, title);
  TORCH_ARG(std::string, x_label);
  TORCH_ARG(std::string, y_label);
  TORCH_ARG(double, y_min) = 0.0;
  TORCH_ARG(double, y_max) = 1.0;
  /// A dashed horizontal reference line at this y (e.g. an energy threshold); NaN = none.
  TORCH_ARG(double, reference) = std::numeric_limits<double>::quiet_NaN();
};

/// SVG line chart, one coloured polyline per series with a legend; x runs 1..max length.
std::string line_chart_svg(const std::vector<LineSeries>& series, const LineChartOptions& options);

}  // namespace strata::core
