// Precompiled header shared by every Strata target (see CMakeLists.txt).
#pragma once
#include <torch/torch.h>
