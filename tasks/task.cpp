// Scenarios, split concatenation and per-scenario logit masks.
#include "tasks/task.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "tasks/streams.h"

namespace strata::tasks {

// ---- lazy inputs ----------------------------------------------------------------------------

void InputSource::validate(const std::string& what) const {
  TORCH_CHECK(data.defined() && data.dim() == 2 && data.is_contiguous() &&
                  (data.scalar_type() == torch::kUInt8 || data.scalar_type() == torch::kFloat32),
              what, ": source data must be contiguous uint8 or float32 [N, P], got ",
              data.defined() ? c10::toString(data.scalar_type()) : "undefined", " ",
              data.defined() ? data.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(shape.size() == 3 && shape[0] > 0 && shape[1] > 0 && shape[2] > 0 &&
                  shape[0] * shape[1] * shape[2] == data.size(1),
              what, ": example shape ", c10::IntArrayRef(shape), " does not match ", data.size(1),
              " values per example");
  TORCH_CHECK(mean.size() == std.size() && (mean.empty() || static_cast<int64_t>(mean.size()) == shape[0]), what,
              ": mean/std must have one value per channel (", shape[0], "), got ", mean.size(), " and ", std.size());
  for (size_t c = 0; c < std.size(); ++c)
    TORCH_CHECK(std::isfinite(mean[c]) && std::isfinite(std[c]) && std[c] > 0, what, ": channel ", c,
                " has mean ", mean[c], " and std ", std[c], " (std must be finite and > 0)");
}

namespace {

void check_rows(const torch::Tensor& rows, int64_t n, const char* fn) {
  TORCH_CHECK(rows.defined() && rows.dim() == 1 && rows.scalar_type() == torch::kInt64, "strata::tasks::", fn,
              "(): rows must be int64 [B], got ", rows.defined() ? rows.sizes() : c10::IntArrayRef{});
  if (rows.numel() == 0) return;
  // A plain loop: training asks for small batches, where tensor reductions cost more than the gather.
  const auto c = rows.contiguous();
  const int64_t* r = c.data_ptr<int64_t>();
  for (int64_t i = 0, m = c.numel(); i < m; ++i)
    TORCH_CHECK(r[i] >= 0 && r[i] < n, "strata::tasks::", fn, "(): row ", r[i], " is out of range for ", n,
                " examples");
}

}  // namespace

namespace {

// lut[c * 256 + v] = (v / 255 - mean[c]) / std[c] (or v / 255 without normalisation), computed in
// double and rounded once, so every batch equals the tensor the stream used to materialise.
std::vector<float> make_lut(const InputSource& src) {
  const bool normalise = !src.mean.empty();
  const int64_t channels = normalise ? static_cast<int64_t>(src.mean.size()) : 1;
  std::vector<float> lut(static_cast<size_t>(256 * channels));
  for (int64_t c = 0; c < channels; ++c)
    for (int v = 0; v < 256; ++v)
      lut[c * 256 + v] = normalise ? static_cast<float>((v / 255.0 - src.mean[c]) / src.std[c])
                                   : static_cast<float>(v / 255.0);
  return lut;
}

// Example i is source row (base ? base[rows[i]] : rows[i]); rows are already checked.
// Fused gather + permutation + scaling + normalisation for uint8 sources:
// out[i, j] = lut[channel(perm[j])][src[row_i, perm[j]]]. One pass writing each output float once;
// the unfused chain (row gather, column gather, convert, scale, shift, divide) made several passes
// over the data. Float sources are copied (and permuted) as they are. Rotations scale first,
// rotate the batch with one affine_grid + grid_sample, then normalise: zero padding is then black
// background, as in the raw image.
torch::Tensor gather_kernel(const InputSource& src, const int64_t* base, const int64_t* r, int64_t n,
                            const InputTransform& tf, const float* l, float* out_ptr) {
  const int64_t p = src.data.size(1);
  std::vector<int64_t> batch_shape = {n};
  batch_shape.insert(batch_shape.end(), src.shape.begin(), src.shape.end());
  const bool is_u8 = src.data.scalar_type() == torch::kUInt8;
  const bool normalise = is_u8 && !src.mean.empty();
  auto row = [&](int64_t i) { return base ? base[r[i]] : r[i]; };
  if (tf.degrees != 0.0) {
    TORCH_INTERNAL_ASSERT(!tf.perm.defined(), "a task is either permuted or rotated");
    auto rows = torch::empty({n}, torch::kInt64);
    for (int64_t i = 0; i < n; ++i) rows.data_ptr<int64_t>()[i] = row(i);
    auto x = src.data.index_select(0, rows);
    x = is_u8 ? x.to(torch::kFloat32).mul_(1.0 / 255.0) : x;
    x = rotate_images(x.view(batch_shape), tf.degrees);
    if (normalise) {
      if (src.mean.size() == 1) {
        x = x.sub_(src.mean[0]).div_(src.std[0]);
      } else {
        const std::vector<int64_t> cshape = {1, src.shape[0], 1, 1};
        x = x.sub_(torch::tensor(src.mean, torch::kFloat64).to(torch::kFloat32).view(cshape))
                .div_(torch::tensor(src.std, torch::kFloat64).to(torch::kFloat32).view(cshape));
      }
    }
    x = x.contiguous();
    if (!out_ptr) return x;
    auto out = torch::from_blob(out_ptr, batch_shape, torch::kFloat32);
    out.copy_(x);
    return out;
  }
  const int64_t* pm = nullptr;
  torch::Tensor perm;
  if (tf.perm.defined()) {
    perm = tf.perm.contiguous();
    TORCH_CHECK(perm.scalar_type() == torch::kInt64 && perm.numel() == p, "strata::tasks::gather_source(): permutation has ",
                perm.numel(), " entries for ", p, " values per example");
    pm = perm.data_ptr<int64_t>();
  }
  torch::Tensor out = out_ptr ? torch::from_blob(out_ptr, batch_shape, torch::kFloat32)
                              : torch::empty(batch_shape, torch::kFloat32);
  float* dst = out.data_ptr<float>();
  if (is_u8) {
    const int64_t channels = normalise ? static_cast<int64_t>(src.mean.size()) : 1;
    const uint8_t* s0 = src.data.data_ptr<uint8_t>();
    // Per output element, the offset of its channel's table (the channel of the SOURCE element).
    std::vector<int32_t> lut_off;
    if (channels > 1) {
      const int64_t hw = p / channels;
      lut_off.resize(static_cast<size_t>(p));
      for (int64_t j = 0; j < p; ++j) lut_off[j] = static_cast<int32_t>(((pm ? pm[j] : j) / hw) * 256);
    }
    const int32_t* lo = lut_off.empty() ? nullptr : lut_off.data();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const uint8_t* s = s0 + row(i) * p;
        float* d = dst + i * p;
        if (lo) {
          if (pm) {
            for (int64_t j = 0; j < p; ++j) d[j] = l[lo[j] + s[pm[j]]];
          } else {
            for (int64_t j = 0; j < p; ++j) d[j] = l[lo[j] + s[j]];
          }
        } else if (pm) {
          for (int64_t j = 0; j < p; ++j) d[j] = l[s[pm[j]]];
        } else {
          for (int64_t j = 0; j < p; ++j) d[j] = l[s[j]];
        }
      }
    });
  } else {
    const float* s0 = src.data.data_ptr<float>();
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float* s = s0 + row(i) * p;
        float* d = dst + i * p;
        if (pm) {
          for (int64_t j = 0; j < p; ++j) d[j] = s[pm[j]];
        } else {
          std::copy(s, s + p, d);
        }
      }
    });
  }
  return out;
}

}  // namespace

torch::Tensor gather_source(const InputSource& src, const torch::Tensor& rows_in, const InputTransform& tf,
                            float* out_ptr) {
  check_rows(rows_in, src.size(), "gather_source");
  const auto rows = rows_in.contiguous();
  const std::vector<float> lut = src.data.scalar_type() == torch::kUInt8 ? make_lut(src) : std::vector<float>{};
  return gather_kernel(src, nullptr, rows.data_ptr<int64_t>(), rows.size(0), tf, lut.data(), out_ptr);
}

Inputs::Inputs(torch::Tensor x) {
  if (!x.defined()) return;
  TORCH_CHECK(x.dim() >= 1, "strata::tasks::Inputs(): inputs need a leading example dimension, got a 0-d tensor");
  Part part;
  part.tensor = std::move(x);
  add(std::move(part));
}

Inputs::Inputs(std::shared_ptr<const InputSource> source, torch::Tensor rows, InputTransform transform) {
  TORCH_CHECK(source, "strata::tasks::Inputs(): null source");
  source->validate("strata::tasks::Inputs()");
  check_rows(rows, source->size(), "Inputs");
  Part part;
  if (source->data.scalar_type() == torch::kUInt8)
    part.lut = std::make_shared<const std::vector<float>>(make_lut(*source));
  part.source = std::move(source);
  part.rows = rows.contiguous();
  part.transform = std::move(transform);
  add(std::move(part));
}

void Inputs::add(Part p) {
  std::vector<int64_t> shape;
  if (p.tensor.defined()) {
    shape.assign(p.tensor.sizes().begin() + 1, p.tensor.sizes().end());
  } else {
    shape = p.source->shape;
  }
  if (parts_.empty()) {
    sizes_ = {0};
    sizes_.insert(sizes_.end(), shape.begin(), shape.end());
    offsets_ = {0};
  } else {
    TORCH_CHECK(c10::IntArrayRef(sizes_).slice(1) == c10::IntArrayRef(shape), "strata::tasks::Inputs::concat(): example shape ",
                c10::IntArrayRef(shape), ", expected ", c10::IntArrayRef(sizes_).slice(1));
  }
  sizes_[0] += p.size();
  offsets_.push_back(sizes_[0]);
  parts_.push_back(std::move(p));
}

Inputs Inputs::concat(const std::vector<const Inputs*>& parts) {
  Inputs out;
  for (const Inputs* in : parts)
    if (in)
      for (const Part& p : in->parts_) out.add(p);
  return out;
}

int64_t Inputs::size(int64_t d) const {
  TORCH_CHECK(defined(), "strata::tasks::Inputs::size(): undefined inputs");
  const int64_t nd = dim();
  TORCH_CHECK(d >= -nd && d < nd, "strata::tasks::Inputs::size(): dimension ", d, " out of range for ", nd, " dims");
  return sizes_[d < 0 ? d + nd : d];
}

torch::ScalarType Inputs::scalar_type() const {
  TORCH_CHECK(defined(), "strata::tasks::Inputs::scalar_type(): undefined inputs");
  return parts_.size() == 1 && parts_[0].tensor.defined() ? parts_[0].tensor.scalar_type() : torch::kFloat32;
}

bool Inputs::is_contiguous() const {
  return parts_.size() == 1 && parts_[0].tensor.defined() ? parts_[0].tensor.is_contiguous() : true;
}

bool Inputs::is_lazy() const {
  return std::any_of(parts_.begin(), parts_.end(), [](const Part& p) { return !p.tensor.defined(); });
}

torch::Tensor Inputs::Part::gather(const torch::Tensor& local, float* out) const {
  if (tensor.defined()) return tensor.index_select(0, local);
  const auto lc = local.contiguous();  // checked against size() by the caller
  return gather_kernel(*source, rows.data_ptr<int64_t>(), lc.data_ptr<int64_t>(), lc.size(0), transform,
                       lut ? lut->data() : nullptr, out);
}

torch::Tensor Inputs::gather_impl(const torch::Tensor& rows, torch::Tensor* buffer) const {
  TORCH_CHECK(defined(), "strata::tasks::Inputs::gather(): undefined inputs");
  check_rows(rows, sizes_[0], "Inputs::gather");
  if (parts_.size() == 1 && parts_[0].tensor.defined()) return parts_[0].tensor.index_select(0, rows);
  std::vector<int64_t> shape(sizes_);
  shape[0] = rows.size(0);
  const int64_t numel = c10::multiply_integers(shape);
  float* out_ptr = nullptr;
  torch::Tensor out;
  if (buffer) {
    if (!buffer->defined() || buffer->scalar_type() != torch::kFloat32 || !buffer->is_contiguous() ||
        buffer->numel() < numel)
      *buffer = torch::empty({numel}, torch::kFloat32);
    out = buffer->view({-1}).slice(0, 0, numel).view(shape);
    out_ptr = out.data_ptr<float>();
  }
  if (parts_.size() == 1) {
    auto x = parts_[0].gather(rows, out_ptr);
    return out.defined() ? out : x;
  }
  // Several parts: route each row to its part, gather per part, put the rows back in order.
  if (!out.defined()) out = torch::empty(shape, torch::kFloat32);
  const auto rc = rows.contiguous();
  const int64_t* r = rc.data_ptr<int64_t>();
  std::vector<std::vector<int64_t>> pos(parts_.size()), local(parts_.size());
  for (int64_t i = 0; i < rc.size(0); ++i) {
    const size_t p = static_cast<size_t>(std::upper_bound(offsets_.begin(), offsets_.end(), r[i]) - offsets_.begin() - 1);
    pos[p].push_back(i);
    local[p].push_back(r[i] - offsets_[p]);
  }
  for (size_t p = 0; p < parts_.size(); ++p) {
    if (pos[p].empty()) continue;
    auto x = parts_[p].gather(torch::tensor(local[p], torch::kInt64), nullptr);
    TORCH_CHECK(x.scalar_type() == torch::kFloat32, "strata::tasks::Inputs::gather(): part ", p, " holds ",
                x.scalar_type(), " inputs, expected float32");
    out.index_copy_(0, torch::tensor(pos[p], torch::kInt64), x);
  }
  return out;
}

torch::Tensor Inputs::gather(const torch::Tensor& rows) const { return gather_impl(rows, nullptr); }
torch::Tensor Inputs::gather(const torch::Tensor& rows, torch::Tensor& buffer) const {
  return gather_impl(rows, &buffer);
}

torch::Tensor Inputs::slice(int64_t begin, int64_t end) const {
  TORCH_CHECK(defined(), "strata::tasks::Inputs::slice(): undefined inputs");
  const int64_t n = sizes_[0];
  begin = std::clamp<int64_t>(begin < 0 ? begin + n : begin, 0, n);
  end = std::clamp<int64_t>(end < 0 ? end + n : end, begin, n);
  if (parts_.size() == 1 && parts_[0].tensor.defined()) return parts_[0].tensor.slice(0, begin, end);
  return gather_impl(torch::arange(begin, end, torch::kInt64), nullptr);
}

torch::Tensor Inputs::slice(int64_t begin, int64_t end, torch::Tensor& buffer) const {
  TORCH_CHECK(defined(), "strata::tasks::Inputs::slice(): undefined inputs");
  const int64_t n = sizes_[0];
  begin = std::clamp<int64_t>(begin < 0 ? begin + n : begin, 0, n);
  end = std::clamp<int64_t>(end < 0 ? end + n : end, begin, n);
  if (parts_.size() == 1 && parts_[0].tensor.defined()) return parts_[0].tensor.slice(0, begin, end);
  return gather_impl(torch::arange(begin, end, torch::kInt64), &buffer);
}

torch::Tensor Inputs::index_select(int64_t d, const torch::Tensor& rows) const {
  TORCH_CHECK(d == 0, "strata::tasks::Inputs::index_select(): only dimension 0 (examples), got ", d);
  return gather(rows);
}

torch::Tensor Inputs::slice(int64_t d, int64_t begin, int64_t end) const {
  TORCH_CHECK(d == 0, "strata::tasks::Inputs::slice(): only dimension 0 (examples), got ", d);
  return slice(begin, end);
}

torch::Tensor Inputs::materialise() const {
  if (!defined()) return torch::Tensor();
  if (parts_.size() == 1 && parts_[0].tensor.defined()) return parts_[0].tensor;
  if (std::all_of(parts_.begin(), parts_.end(), [](const Part& p) { return p.tensor.defined(); })) {
    std::vector<torch::Tensor> xs;
    for (const Part& p : parts_) xs.push_back(p.tensor);
    return torch::cat(xs);
  }
  return slice(0, sizes_[0]);
}

// ---- scenarios ----------------------------------------------------------------------------

std::string to_string(Scenario s) {
  switch (s) {
    case Scenario::kTaskIncremental: return "task";
    case Scenario::kClassIncremental: return "class";
    case Scenario::kDomainIncremental: return "domain";
  }
  TORCH_CHECK(false, "strata::tasks::to_string(): unknown Scenario value ", static_cast<int>(s));
}

Scenario scenario_from_string(const std::string& s) {
  if (s == "task") return Scenario::kTaskIncremental;
  if (s == "class") return Scenario::kClassIncremental;
  if (s == "domain") return Scenario::kDomainIncremental;
  TORCH_CHECK(false, "strata::tasks::scenario_from_string(): unknown scenario '", s,
              "' (expected one of: task, class, domain)");
}

Split concat(const std::vector<const Split*>& splits) {
  std::vector<const Inputs*> xs;
  std::vector<torch::Tensor> ys, ids, task;
  for (size_t i = 0; i < splits.size(); ++i) {
    const Split* s = splits[i];
    TORCH_CHECK(s != nullptr, "strata::tasks::concat(): split ", i, " is null");
    if (!s->y.defined()) continue;  // an empty, never-filled split contributes nothing
    TORCH_CHECK(s->x.defined() && s->ids.defined() && s->task.defined(), "strata::tasks::concat(): split ", i,
                " has y but is missing x, ids or task");
    TORCH_CHECK(s->x.size(0) == s->size() && s->ids.size(0) == s->size() && s->task.size(0) == s->size(),
                "strata::tasks::concat(): split ", i, " has inconsistent lengths: x ", s->x.sizes(), ", y ",
                s->y.sizes(), ", ids ", s->ids.sizes(), ", task ", s->task.sizes());
    if (!xs.empty())
      TORCH_CHECK(s->x.sizes().slice(1) == xs.front()->sizes().slice(1), "strata::tasks::concat(): split ", i,
                  " has example shape ", s->x.sizes().slice(1), ", expected ", xs.front()->sizes().slice(1));
    xs.push_back(&s->x);
    ys.push_back(s->y);
    ids.push_back(s->ids);
    task.push_back(s->task);
  }
  Split out;
  if (xs.empty()) return out;
  if (xs.size() == 1) {
    // Tensors are shared, not copied; callers treat splits as read-only.
    out.x = *xs[0];
    out.y = ys[0];
    out.ids = ids[0];
    out.task = task[0];
    return out;
  }
  // Explicit inputs are joined as before; lazy ones stay lazy (joint training over permuted
  // tasks keeps one copy of the source).
  const bool any_lazy = std::any_of(xs.begin(), xs.end(), [](const Inputs* x) { return x->is_lazy(); });
  if (any_lazy) {
    out.x = Inputs::concat(xs);
  } else {
    std::vector<torch::Tensor> ts;
    for (const Inputs* x : xs) ts.push_back(x->materialise());
    out.x = torch::cat(ts);
  }
  out.y = torch::cat(ys);
  out.ids = torch::cat(ids);
  out.task = torch::cat(task);
  return out;
}

torch::Tensor TaskStream::logit_mask(int64_t stage) const {
  TORCH_CHECK(stage >= 0 && stage < size(), "strata::tasks::TaskStream::logit_mask(): stage ", stage,
              " is out of range for a stream of ", size(), " tasks");
  TORCH_CHECK(num_classes > 0, "strata::tasks::TaskStream::logit_mask(): num_classes is ", num_classes);
  const int64_t n = size();
  auto mask = torch::zeros({n, num_classes}, torch::kBool);
  if (scenario == Scenario::kDomainIncremental) {
    mask.fill_(true);
    return mask;
  }
  auto acc = mask.accessor<bool, 2>();
  auto mark = [&](int64_t row, const Task& t) {
    for (int64_t c : t.classes) {
      TORCH_CHECK(c >= 0 && c < num_classes, "strata::tasks::TaskStream::logit_mask(): task ", t.index,
                  " has class ", c, " outside the head of ", num_classes, " classes");
      acc[row][c] = true;
    }
  };
  for (int64_t t = 0; t < n; ++t) {
    if (scenario == Scenario::kTaskIncremental) {
      mark(t, tasks[t]);
    } else {  // class-incremental: every class seen up to max(t, stage)
      const int64_t last = std::max(t, stage);
      for (int64_t s = 0; s <= last; ++s) mark(t, tasks[s]);
    }
  }
  return mask;
}

torch::Tensor TaskStream::own_task_mask() const {
  TORCH_CHECK(num_classes > 0, "strata::tasks::TaskStream::own_task_mask(): num_classes is ", num_classes);
  auto mask = torch::zeros({size(), num_classes}, torch::kBool);
  auto acc = mask.accessor<bool, 2>();
  for (int64_t t = 0; t < size(); ++t)
    for (int64_t c : tasks[t].classes) {
      TORCH_CHECK(c >= 0 && c < num_classes, "strata::tasks::TaskStream::own_task_mask(): task ", t, " has class ", c,
                  " outside the head of ", num_classes, " classes");
      acc[t][c] = true;
    }
  return mask;
}

}  // namespace strata::tasks
