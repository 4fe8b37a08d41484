#pragma once
// Starting points for adapter methods, which adapt a pre-trained backbone:
//   --init FILE                      start from a stored version's weights, or a safetensors /
//                                    HDF5 state_dict file (models/weights.h: --weights-names,
//                                    --init-head);
//   --pretrain SPEC                  first train the whole model on a named task or class split.
// Both run before Method::attach(), so adapters wrap the pre-trained weights, and before the
// initial accuracies b are measured (b = accuracy of the model the stream starts from).
#include "continual/method.h"
#include "continual/trainer.h"
#include "tasks/streams.h"

#include <string>

namespace strata::run {

/// Loads every parameter and buffer of `model` from a version file (all-or-nothing; the file must
/// come from the same model configuration with adapters merged): models::load_weights with Strata
/// names. Throws naming the file and every missing, unexpected or mismatching tensor.
void init_from_version(models::ModelImpl& model, const std::string& path);

/// What --pretrain names. Forms:
///   "task:N"      task N of the run's own stream (its training split)
///   "split:K"     split-fmnist tasks 0..K-1 (classes 0..2K-1), logits masked to those classes
struct PretrainSpec {
  std::string kind;  ///< "task" | "split"
  int64_t value = 0;
  static PretrainSpec parse(const std::string& text);  ///< throws naming the bad text
};

/// Trains the whole model (every parameter) on the spec's data for `epochs` epochs with the run's
/// training options (the optimizer is the run's, the seed offset so it never repeats a task's
/// shuffles). With `parallel` (several workers) it is sharded like a task (continual::train_task):
/// each worker trains its rows of every global batch and every worker ends with the same model.
/// Returns the pre-training set's size.
int64_t pretrain(const models::Model& model, const std::string& spec, int64_t epochs, const continual::TrainOptions& train,
                 const tasks::TaskStream& stream, const tasks::StreamOptions& stream_options,
                 continual::DataParallel* parallel = nullptr);

}  // namespace strata::run
