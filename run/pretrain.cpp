#include "run/pretrain.h"

#include "checkpoints/version_store.h"
#include "models/weights.h"
#include "continual/naive.h"
#include "tasks/streams.h"

namespace strata::run {

using namespace strata::continual;

void init_from_version(models::ModelImpl& model, const std::string& path) {
  // Strict and all-or-nothing (models/weights.h): a refused init leaves the model as it was.
  models::load_weights(model, path, models::LoadOptions().names("strata"));
}

PretrainSpec PretrainSpec::parse(const std::string& text) {
  const auto colon = text.find(':');
  PretrainSpec s;
  if (colon != std::string::npos) {
    s.kind = text.substr(0, colon);
    try {
      size_t pos = 0;
      s.value = std::stoll(text.substr(colon + 1), &pos);
      if (pos != text.size() - colon - 1) s.kind.clear();
    } catch (const std::exception&) {
      s.kind.clear();
    }
  }
  TORCH_CHECK((s.kind == "task" && s.value >= 0) || (s.kind == "split" && s.value >= 1 && s.value <= 5),
              "option --pretrain: '", text, "' is not task:N (a task of the stream) or split:K (K in 1..5)");
  return s;
}

int64_t pretrain(const models::Model& model, const std::string& text, int64_t epochs, const TrainOptions& train,
                 const tasks::TaskStream& stream, const tasks::StreamOptions& stream_options,
                continual::DataParallel* parallel) {
  TORCH_CHECK(epochs >= 1, "option --pretrain-epochs: must be >= 1, got ", epochs);
  const auto spec = PretrainSpec::parse(text);
  tasks::TaskStream data;
  if (spec.kind == "task") {
    TORCH_CHECK(spec.value < stream.size(), "option --pretrain: task ", spec.value, " but the stream has ",
                stream.size(), " tasks");
    data = stream;
    data.tasks = {stream.tasks[spec.value]};
    data.tasks[0].index = 0;
    data.tasks[0].train.task = torch::zeros_like(data.tasks[0].train.task);
    data.scenario = tasks::Scenario::kDomainIncremental;
  } else {
    auto so = stream_options;
    // split:K means classes 0..2K-1 of the stream's dataset, whatever split options the stream uses.
    so.name(so.dataset() == "fmnist" ? "split-fmnist" : "split")
        .classes_per_task(2)
        .first_task_classes(0)
        .class_order({})
        .class_order_seed(-1)
        .num_tasks(spec.value)
        .scenario("class");
    auto split = tasks::make_stream(so);
    TORCH_CHECK(split.num_classes <= stream.num_classes, "option --pretrain: split:", spec.value, " has ",
                split.num_classes, " classes but the model has ", stream.num_classes, " outputs");
    std::vector<const tasks::Split*> parts;
    for (const auto& t : split.tasks) parts.push_back(&t.train);
    tasks::Task task;
    task.name = "pretrain-" + text;
    task.train = tasks::concat(parts);
    task.train.task = torch::zeros_like(task.train.task);
    for (const auto& t : split.tasks) task.classes.insert(task.classes.end(), t.classes.begin(), t.classes.end());
    data.name = "pretrain";
    data.scenario = tasks::Scenario::kClassIncremental;  // logits masked to the pre-training classes
    data.num_classes = stream.num_classes;
    data.input_shape = stream.input_shape;
    data.tasks = {task};
  }
  TaskContext ctx;
  ctx.model = model;
  ctx.stream = &data;
  ctx.task_index = 0;
  ctx.parallel = parallel;
  auto opt = train;
  opt.epochs(epochs).seed(train.seed() + 7919);  // its own shuffles, never a task's
  ctx.train = &opt;
  Naive full;  // every parameter trains
  train_task(ctx, full, opt);
  return data.tasks[0].train.size();
}

}  // namespace strata::run
