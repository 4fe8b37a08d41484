#include "dist/group.h"

// c10d guards its backends' headers with the macros PyTorch's own build defines (Torch's CMake
// targets pass USE_C10D_GLOO already; the define keeps the file building without it).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef STRATA_HAVE_NCCL
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace strata::dist {

void GroupOptions::validate() const {
  TORCH_CHECK(world_size_ >= 1, "strata::dist: WORLD_SIZE must be >= 1, got ", world_size_);
  TORCH_CHECK(rank_ >= 0 && rank_ < world_size_, "strata::dist: RANK must be in [0, WORLD_SIZE = ", world_size_,
              "), got ", rank_);
  TORCH_CHECK(local_rank_ >= 0, "strata::dist: LOCAL_RANK must be >= 0, got ", local_rank_);
  TORCH_CHECK(!master_addr_.empty(), "strata::dist: MASTER_ADDR is empty");
  TORCH_CHECK(master_port_ > 0 && master_port_ < 65536, "strata::dist: MASTER_PORT must be in 1..65535, got ",
              master_port_);
  TORCH_CHECK(timeout_ > 0, "option --dist-timeout: must be > 0 seconds, got ", timeout_);
  TORCH_CHECK(backend_ == "gloo" || backend_ == "nccl", "option --dist-backend: '", backend_,
              "' (valid: gloo, nccl)");
  TORCH_CHECK(backend_ != "nccl" || have_nccl(), "option --dist-backend nccl: this build has no NCCL (it needs a "
              "LibTorch built with CUDA); use gloo");
  TORCH_CHECK(bucket_bytes_ > 0, "strata::dist: bucket_bytes must be > 0, got ", bucket_bytes_);
}

bool have_nccl() {
#ifdef STRATA_HAVE_NCCL
  return true;
#else
  return false;
#endif
}

namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v, &end, 10);
  TORCH_CHECK(errno == 0 && end && *end == '\0', "strata::dist: environment variable ", name, "='", v,
              "' is not an integer");
  return x;
}

std::string describe(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->msg();
  return e.what();
}

}  // namespace

std::optional<GroupOptions> options_from_env() {
  const char* ws = std::getenv("WORLD_SIZE");
  if (!ws || !*ws) return std::nullopt;
  GroupOptions o;
  o.world_size(env_int("WORLD_SIZE", 1));
  TORCH_CHECK(std::getenv("RANK") || o.world_size() == 1, "strata::dist: WORLD_SIZE is set (", o.world_size(),
              ") but RANK is not");
  o.rank(env_int("RANK", 0));
  o.local_rank(env_int("LOCAL_RANK", o.rank()));
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) o.master_addr(a);
  o.master_port(env_int("MASTER_PORT", 29500));
  return o;
}

struct Group::Impl {
  GroupOptions options;
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  bool device = false;  // NCCL: tensors travel through the GPU
  double reduce_seconds = 0;
  int64_t reduce_calls = 0;

  // Waits for every piece of work; a failure names this rank, the operation and the timeout, which
  // is what a user needs to know when another worker died or hung.
  void wait(std::vector<c10::intrusive_ptr<c10d::Work>>& works, const char* op) {
    for (auto& w : works) {
      try {
        w->wait();
      } catch (const std::exception& e) {
        TORCH_CHECK(false, "strata::dist: rank ", options.rank(), " of ", options.world_size(), ": ", op,
                    " failed: another worker died, hung or was stopped (each collective waits at most ",
                    options.timeout(), " s, --dist-timeout): ", describe(e));
      }
    }
    works.clear();
  }
  torch::Tensor to_comm(const torch::Tensor& t) const {
    return device ? t.to(torch::Device(torch::kCUDA, options.local_rank())) : t;
  }
};

Group::Group(const GroupOptions& options) : impl_(std::make_unique<Impl>()) {
  options.validate();
  impl_->options = options;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout() * 1000));
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(options.master_port());
  so.isServer = options.rank() == 0;
  so.numWorkers = static_cast<size_t>(options.world_size());
  so.waitWorkers = true;
  so.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(options.master_addr(), so);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "strata::dist: rank ", options.rank(), " of ", options.world_size(),
                ": rendezvous at MASTER_ADDR:MASTER_PORT = ", options.master_addr(), ":", options.master_port(),
                " failed within ", options.timeout(), " s (is every worker started, the port free on rank 0 and "
                "reachable?): ", describe(e));
  }
  try {
    if (options.backend() == "gloo") {
      auto go = c10d::ProcessGroupGloo::Options::create(timeout);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else if (options.master_addr().rfind("127.", 0) == 0 || options.master_addr() == "localhost")
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      else
        go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, static_cast<int>(options.rank()),
                                                              static_cast<int>(options.world_size()), go);
    } else {
#ifdef STRATA_HAVE_NCCL
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = timeout;
      impl_->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, static_cast<int>(options.rank()),
                                                              static_cast<int>(options.world_size()), no);
      impl_->device = true;
#endif
    }
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "strata::dist: rank ", options.rank(), " of ", options.world_size(), ": cannot connect the ",
                options.backend(), " process group within ", options.timeout(), " s: ", describe(e));
  }
  TORCH_INTERNAL_ASSERT(impl_->pg, "strata::dist::Group: no process group for backend ", options.backend());
}

Group::~Group() = default;

int64_t Group::rank() const { return impl_->options.rank(); }
int64_t Group::world_size() const { return impl_->options.world_size(); }
const GroupOptions& Group::options() const { return impl_->options; }
double Group::reduce_seconds() const { return impl_->reduce_seconds; }
int64_t Group::reduce_calls() const { return impl_->reduce_calls; }

void Group::all_reduce_gradients(const std::vector<torch::Tensor>& params, torch::Tensor& stats) {
  const auto t0 = std::chrono::steady_clock::now();
  torch::NoGradGuard no_grad;
  // Buckets: runs of parameters with one dtype, up to bucket_bytes each.
  struct Bucket {
    std::vector<size_t> members;
    torch::Tensor flat;
  };
  std::vector<Bucket> buckets;
  int64_t bytes = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const int64_t b = p.numel() * static_cast<int64_t>(p.element_size());
    if (buckets.empty() || p.scalar_type() != params[buckets.back().members.back()].scalar_type() ||
        bytes + b > impl_->options.bucket_bytes()) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().members.push_back(i);
    bytes += b;
  }
  // The flags say which parameters have a gradient on some worker (the rest stay undefined).
  std::vector<double> flags(params.size());
  for (size_t i = 0; i < params.size(); ++i) flags[i] = params[i].grad().defined() ? 1.0 : 0.0;
  auto extra = torch::cat({stats.to(torch::kFloat64).reshape({-1}),
                           torch::tensor(flags, torch::kFloat64).reshape({-1})});
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<std::vector<torch::Tensor>> lists;
  lists.reserve(buckets.size() + 1);
  for (auto& bucket : buckets) {
    std::vector<torch::Tensor> parts;
    for (size_t i : bucket.members) {
      const auto& g = params[i].grad();
      parts.push_back(g.defined() ? g.reshape({-1}) : torch::zeros({params[i].numel()}, params[i].options()));
    }
    bucket.flat = impl_->to_comm(torch::cat(parts));
    lists.push_back({bucket.flat});
    works.push_back(impl_->pg->allreduce(lists.back()));
  }
  auto extra_comm = impl_->to_comm(extra);
  lists.push_back({extra_comm});
  works.push_back(impl_->pg->allreduce(lists.back()));
  impl_->wait(works, "gradient all-reduce");
  extra = extra_comm.cpu();
  const auto reduced = extra.accessor<double, 1>();
  for (auto& bucket : buckets) {
    const torch::Tensor flat = bucket.flat.cpu();
    int64_t offset = 0;
    for (size_t i : bucket.members) {
      auto p = params[i];
      const int64_t n = p.numel();
      if (reduced[stats.numel() + i] == 0) {
        p.mutable_grad().reset();
      } else if (p.grad().defined()) {
        p.mutable_grad().copy_(flat.slice(0, offset, offset + n).view_as(p));
      } else {
        p.mutable_grad() = flat.slice(0, offset, offset + n).view_as(p).clone();
      }
      offset += n;
    }
  }
  stats.copy_(extra.slice(0, 0, stats.numel()).view_as(stats));
  impl_->reduce_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ++impl_->reduce_calls;
}

void Group::all_reduce_sum(torch::Tensor& t) {
  std::vector<torch::Tensor> list{impl_->to_comm(t.contiguous())};
  std::vector<c10::intrusive_ptr<c10d::Work>> works{impl_->pg->allreduce(list)};
  impl_->wait(works, "all-reduce");
  if (!list[0].is_same(t)) t.copy_(list[0]);
}

torch::Tensor Group::all_gather_rows(const torch::Tensor& local, int64_t total_rows) {
  const int64_t world = world_size();
  const auto [first, last] = continual::shard_range(total_rows, rank(), world);
  TORCH_INTERNAL_ASSERT(local.size(0) == last - first, "strata::dist::Group::all_gather_rows(): rank ", rank(),
                        " passed ", local.size(0), " rows, its share of ", total_rows, " is ", last - first);
  // Gloo gathers equal shapes: pad every share to the largest.
  const int64_t rows = (total_rows + world - 1) / world;
  auto shape = local.sizes().vec();
  shape[0] = rows;
  auto padded = torch::zeros(shape, local.options());
  padded.slice(0, 0, local.size(0)).copy_(local);
  std::vector<torch::Tensor> input{impl_->to_comm(padded)};
  std::vector<std::vector<torch::Tensor>> output(1);
  for (int64_t r = 0; r < world; ++r) output[0].push_back(torch::empty_like(input[0]));
  std::vector<c10::intrusive_ptr<c10d::Work>> works{impl_->pg->allgather(output, input)};
  impl_->wait(works, "all-gather");
  std::vector<torch::Tensor> parts;
  for (int64_t r = 0; r < world; ++r) {
    const auto [f, l] = continual::shard_range(total_rows, r, world);
    parts.push_back(output[0][r].cpu().slice(0, 0, l - f));
  }
  return torch::cat(parts);
}

void Group::broadcast(std::vector<torch::Tensor>& tensors, int64_t root) {
  std::vector<std::vector<torch::Tensor>> lists;
  lists.reserve(tensors.size());
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  c10d::BroadcastOptions bo;
  bo.rootRank = root;
  for (auto& t : tensors) {
    lists.push_back({impl_->to_comm(t.contiguous())});
    works.push_back(impl_->pg->broadcast(lists.back(), bo));
  }
  impl_->wait(works, "broadcast");
  for (size_t i = 0; i < tensors.size(); ++i)
    if (!lists[i][0].is_same(tensors[i])) tensors[i].copy_(lists[i][0]);
}

void Group::barrier() {
  std::vector<c10::intrusive_ptr<c10d::Work>> works{impl_->pg->barrier()};
  impl_->wait(works, "barrier");
}

void Group::check_agreement(uint64_t sum, const std::string& what) {
  int64_t as_int;
  static_assert(sizeof as_int == sizeof sum);
  std::memcpy(&as_int, &sum, sizeof sum);
  const auto all = all_gather_rows(torch::full({1}, as_int, torch::kInt64), world_size());
  std::string differ;
  for (int64_t r = 1; r < world_size(); ++r)
    if (all[r].item<int64_t>() != all[0].item<int64_t>()) differ += (differ.empty() ? "" : ", ") + std::to_string(r);
  TORCH_CHECK(differ.empty(), "strata::dist: the workers disagree on ", what, ": rank(s) ", differ,
              " differ from rank 0 (checksums of their copies differ); stopping before anything is written. "
              "Workers must run the same binary, threads and data.");
}

uint64_t checksum(const std::vector<torch::Tensor>& tensors, const std::string& text) {
  // FNV-1a over 64-bit words: fast enough for every task end, and any changed bit changes it.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t w) {
    h ^= w;
    h *= 1099511628211ull;
  };
  auto mix_bytes = [&](const unsigned char* p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      mix(w);
    }
    uint64_t tail = 0;
    std::memcpy(&tail, p + i, n - i);
    mix(tail ^ (static_cast<uint64_t>(n) << 56));
  };
  for (const auto& t : tensors) {
    if (!t.defined()) {
      mix(0x5bd1e995ull);
      continue;
    }
    const auto c = t.detach().cpu().contiguous();
    mix(static_cast<uint64_t>(c.scalar_type()));
    for (auto s : c.sizes()) mix(static_cast<uint64_t>(s));
    mix_bytes(static_cast<const unsigned char*>(c.data_ptr()), c.numel() * c.element_size());
  }
  mix_bytes(reinterpret_cast<const unsigned char*>(text.data()), text.size());
  return h;
}

}  // namespace strata::dist
