#include "core/step_inputs.h"

#include <atomic>

namespace strata::core {
namespace {
thread_local const StepInputs* current_inputs = nullptr;
std::atomic<uint64_t> order_counter{0};
}  // namespace

bool StepInputs::aliases(const torch::Tensor& input) const {
  return input.defined() && x.defined() && input.data_ptr() == x.data_ptr() && input.numel() == x.numel() &&
         input.scalar_type() == x.scalar_type() && input.device() == x.device() && input.is_contiguous() &&
         x.is_contiguous() && input._version() == version_;
}

uint64_t new_order_id() { return ++order_counter; }

StepInputsGuard::StepInputsGuard(StepInputs inputs) : inputs_(std::move(inputs)), previous_(current_inputs) {
  TORCH_CHECK(inputs_.x.defined() && inputs_.order.defined() && inputs_.gather && inputs_.order_id != 0 &&
                  0 <= inputs_.begin && inputs_.begin <= inputs_.end && inputs_.end <= inputs_.order.numel() &&
                  (inputs_.rows_id == 0 || inputs_.num_rows == inputs_.order.numel()),
              "strata::core::StepInputsGuard(): incomplete step inputs (rows [", inputs_.begin, ", ", inputs_.end,
              ") of an order of ", inputs_.order.defined() ? inputs_.order.numel() : 0, ")");
  inputs_.version_ = inputs_.x._version();
  current_inputs = &inputs_;
}

StepInputsGuard::~StepInputsGuard() { current_inputs = previous_; }

const StepInputs* StepInputsGuard::current() { return current_inputs; }

}  // namespace strata::core
