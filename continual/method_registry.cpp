// The explicit method registry: one line per built-in method.
#include "continual/codyra_method.h"
#include "continual/coso.h"
#include "continual/gpm.h"
#include "continual/joint.h"
#include "continual/lora_method.h"
#include "continual/method.h"
#include "continual/mora_method.h"
#include "continual/naive.h"
#include "continual/olora_method.h"
#include "continual/osft.h"

namespace strata::continual {

namespace {
MethodRegistry build() {
  MethodRegistry r;
  r.add({"naive", "plain fine-tuning on each task in turn (lower bound)", {},
         [](const MethodConfig&) { return std::make_unique<Naive>(); }});
  r.add({"joint", "trains on the union of all tasks so far (upper bound)", {},
         [](const MethodConfig&) { return std::make_unique<Joint>(); }});
  r.add({"gpm", "Gradient Projection Memory: input-side projection away from stored representation bases",
         gpm_table().options(), make_gpm});
  r.add({"lora", "sequential LoRA: a fresh adapter per task, merged into the base at task end", lora_table().options(),
         [](const MethodConfig& c) { return std::make_unique<LoRAMethod>(lora_table().parse(c)); }});
  r.add({"olora", "O-LoRA: per-task LoRA banks with an orthogonality penalty on the A matrices", olora_table().options(),
         [](const MethodConfig& c) { return std::make_unique<OLoRAMethod>(olora_table().parse(c)); }});
  r.add({"codyra", "CoDyRA: gated LoRA, L1 soft-threshold after a dense warm-up, prune + merge at task end",
         codyra_table().options(), [](const MethodConfig& c) { return std::make_unique<CoDyRAMethod>(codyra_table().parse(c)); }});
  r.add({"mora", "MoRA/MoRAM: per-task rank-1 atoms, earlier atoms frozen, self-activated top-k routing",
         mora_table().options(), [](const MethodConfig& c) { return std::make_unique<MoRAMethod>(mora_table().parse(c)); }});
  r.add({"coso", "CoSO: full-weight Adam in a low-rank gradient subspace orthogonal (output side) to earlier tasks' FD-sketched subspaces",
         coso_table().options(), [](const MethodConfig& c) { return std::make_unique<CoSO>(c); }});
  r.add({"osft", "OSFT: adaptive weight SVD per task, top-k singular directions frozen, the rest trained (projected)",
         osft_table().options(), [](const MethodConfig& c) { return std::make_unique<OSFTMethod>(osft_table().parse(c)); }});
  return r;
}
}  // namespace

const MethodRegistry& builtin_methods() {
  static const MethodRegistry registry = build();
  return registry;
}

}  // namespace strata::continual
