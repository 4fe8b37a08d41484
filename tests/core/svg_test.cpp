// core::heatmap_svg: one cell per entry, values as text, unmeasured cells grey, labels checked.
#include "core/svg.h"

#include <gtest/gtest.h>

#include <limits>

namespace strata::core {
namespace {

int64_t count(const std::string& s, const std::string& what) {
  int64_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

TEST(Heatmap, OneCellPerEntryWithItsValue) {
  const auto m = torch::tensor({{0.5, 0.25, std::numeric_limits<double>::quiet_NaN()}, {1.0, 0.0, 0.125}},
                               torch::kDouble);
  const std::string svg = heatmap_svg(m, HeatmapOptions().title("acc <&>").row_labels({"a", "b"}).palette("greens"));
  EXPECT_EQ(count(svg, "<rect x="), 6);
  EXPECT_NE(svg.find(">50.0<"), std::string::npos);
  EXPECT_NE(svg.find(">12.5<"), std::string::npos);
  EXPECT_NE(svg.find(">100.0<"), std::string::npos);
  EXPECT_EQ(count(svg, "rgb(220,220,220)"), 1);  // the NaN cell
  EXPECT_NE(svg.find(">-<"), std::string::npos);
  EXPECT_NE(svg.find("acc &lt;&amp;&gt;"), std::string::npos);
  EXPECT_NE(svg.find("rgb(0,109,44)"), std::string::npos);  // the maximum gets the darkest green
}

TEST(Heatmap, RejectsBadShapesAndLabels) {
  EXPECT_THROW(heatmap_svg(torch::zeros({3}), {}), c10::Error);
  EXPECT_THROW(heatmap_svg(torch::zeros({2, 2}), HeatmapOptions().row_labels({"one"})), c10::Error);
  EXPECT_THROW(heatmap_svg(torch::zeros({2, 2}), HeatmapOptions().palette("rainbow")), c10::Error);
}

}  // namespace
}  // namespace strata::core

namespace strata::core {
namespace {

TEST(LineChart, OnePolylinePerSeriesWithMarkersAndLegend) {
  std::vector<LineSeries> s = {{"task00", {0.5, 0.9, 1.0}, 1}, {"task01 <b>", {0.2, 0.4}, -1}};
  const std::string svg = line_chart_svg(s, LineChartOptions().title("energy").reference(0.95));
  EXPECT_EQ(count(svg, "<polyline"), 2);
  EXPECT_EQ(count(svg, "<circle"), 1);
  EXPECT_NE(svg.find("task01 &lt;b&gt;"), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);
  EXPECT_THROW(line_chart_svg({}, {}), c10::Error);
  EXPECT_THROW(line_chart_svg(s, LineChartOptions().y_min(1).y_max(1)), c10::Error);
}

}  // namespace
}  // namespace strata::core
