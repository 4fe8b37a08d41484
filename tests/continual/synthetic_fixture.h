#pragma once
// A two-task synthetic stream, a small MLP and training options, shared by method unit tests that
// drive hooks by hand (gpm_test, compat_training_test).
#include "continual/method.h"
#include "continual/trainer.h"
#include "tasks/streams.h"

namespace strata::continual::testing {
using namespace strata::run;

struct SyntheticFixture {
  tasks::TaskStream stream;
  strata::models::Model model;
  TrainOptions train;
  SyntheticFixture() {
    torch::manual_seed(0);
    stream = tasks::make_stream(tasks::StreamOptions().name("synthetic").num_tasks(2).seed(1));
    model = strata::models::make_model(strata::models::ModelOptions().input_shape(stream.input_shape).num_classes(stream.num_classes).hidden({16}));
    train.lr(0.05).batch_size(16).epochs(1);
  }
  TaskContext ctx(int64_t t) {
    TaskContext c;
    c.model = model;
    c.stream = &stream;
    c.task_index = t;
    c.train = &train;
    return c;
  }
};

}  // namespace strata::continual::testing
