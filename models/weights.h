#pragma once
// Model weights in and out of Strata: standard checkpoint formats and the naming schemes of
// torchvision and timm, so a ViT trained in PyTorch loads into Strata and back.
//
// Formats (read_weight_file tells them apart by content, not by extension):
//   safetensors          core/safetensors.h; F16/BF16/F64 tensors are converted to the model's
//                        dtype (float32) on load
//   HDF5 state_dict      one dataset per key, as h5py writes {k: v.numpy()}: either datasets at the
//                        root named by the dotted key ("encoder.ln.weight"), or nested groups, one
//                        per dot ("encoder/ln/weight"); float16 datasets are read as float32
//   Strata version       runs/NAME/versions/vNNN.h5 (checkpoints/version_store.h; checksum
//                        verified): its /model tensors, always Strata names
//
// Names. Strata's own names are the module paths (models/models.h). For the ViT two more schemes
// map one to one onto them, except that q, k and v are separate Linear layers in Strata (adapter
// methods target each) and one fused [3D, D] matrix, rows q;k;v, in PyTorch:
//
//   Strata                  torchvision VisionTransformer                    timm VisionTransformer
//   patch_embed.weight *    conv_proj.weight                                 patch_embed.proj.weight
//   patch_embed.bias        conv_proj.bias                                   patch_embed.proj.bias
//   cls_token               class_token                                      cls_token
//   pos_embed               encoder.pos_embedding                            pos_embed
//   blocks.N.norm1.{w,b}    encoder.layers.encoder_layer_N.ln_1.{w,b}        blocks.N.norm1.{w,b}
//   blocks.N.attn.{q,k,v}   ...encoder_layer_N.self_attention.in_proj_{weight,bias} (fused)
//                                                                            blocks.N.attn.qkv (fused)
//   blocks.N.attn.o         ...encoder_layer_N.self_attention.out_proj       blocks.N.attn.proj
//   blocks.N.norm2          ...encoder_layer_N.ln_2                          blocks.N.norm2
//   blocks.N.mlp.fc1        ...encoder_layer_N.mlp.0                         blocks.N.mlp.fc1
//   blocks.N.mlp.fc2        ...encoder_layer_N.mlp.3                         blocks.N.mlp.fc2
//   norm                    encoder.ln                                       norm
//   head                    heads.head                                       head
//
//   * Strata's patch embedding is a Linear on flattened (C, p, p) patches: weight [D, C*p*p], the
//     conv weight [D, C, p, p] reshaped (the same function as a Conv2d with kernel = stride = p).
//
// The MLP and CNN have Strata names only.
//
// Loading is strict, like PyTorch's load_state_dict(strict=True): every key the model expects
// must be in the file with the model's shape, and nothing else may be; all problems (missing,
// unexpected and shape-mismatched keys, in the file's naming) are reported in one error, and a
// refused load leaves the model untouched.
#include "core/safetensors.h"
#include "models/models.h"

#include <map>
#include <string>
#include <vector>

namespace strata::models {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

enum class WeightNames { kStrata, kTorchvision, kTimm };
/// "strata" | "torchvision" | "timm"; throws naming the bad value.
WeightNames weight_names_from_string(const std::string& s);
std::string to_string(WeightNames names);
/// The naming schemes `model` has (strata for every model; torchvision and timm for the ViT).
std::vector<WeightNames> supported_names(const ModelImpl& model);

/// A weight file's tensors, in the file's own names.
struct WeightFile {
  std::string format;  ///< "safetensors" | "h5-state-dict" | "strata-version"
  NamedTensors tensors;
  std::map<std::string, std::string> metadata;  ///< safetensors __metadata__ / HDF5 root attributes
};
/// Reads any of the three formats; throws naming the file when it is none of them or is corrupt.
WeightFile read_weight_file(const std::string& path);

/// The model's parameters and buffers (Strata names) renamed to `names`, q/k/v fused into one
/// tensor and the patch embedding reshaped to the conv layout where the scheme wants it. Tensors
/// are detached CPU copies. Throws for a scheme the model lacks, or for a tensor without a name in
/// it (an unmerged adapter's factors: merge adapters first).
NamedTensors export_state(ModelImpl& model, WeightNames names);

/// The naming `tensors` uses for `model`: the scheme that matches the most keys. Throws when no
/// key matches any scheme or two schemes match equally many (pass the names explicitly then).
WeightNames detect_names(ModelImpl& model, const NamedTensors& tensors, const std::string& file);

struct LoadOptions {
  /// "" = auto-detect (detect_names), else "strata" | "torchvision" | "timm".
  TORCH_ARG(std::string, names) = "";
  /// "strict": the classifier must fit like every other tensor. "reset": when the file's head has
  /// another shape (another class count) or no head at all, keep the model's fresh head.
  TORCH_ARG(std::string, init_head) = "strict";
};

/// What load_weights did (for the log line).
struct LoadReport {
  std::string format;
  WeightNames names = WeightNames::kStrata;
  int64_t tensors = 0;       ///< model tensors written
  bool head_kept = false;    ///< --init-head reset kept the fresh classifier
  std::string head_reason;   ///< why, e.g. "file head.weight [1000, 192], model [10, 192]"
};

/// Loads a weight file into `model` (no adapters attached): strict, all-or-nothing (see above).
LoadReport load_weights(ModelImpl& model, const std::string& path, const LoadOptions& options = {});
/// The same from tensors already in memory (`file` labels messages).
LoadReport load_state(ModelImpl& model, const NamedTensors& tensors, const std::string& file,
                      const LoadOptions& options = {}, const std::string& format = "tensors");

/// Writes export_state(model, names) as "safetensors" or "h5" (an HDF5 state_dict with the dotted
/// keys as root datasets), atomically. `metadata` goes to the safetensors header / HDF5 root
/// attributes, with "format" = "pt" and "strata_names" = the scheme added.
void save_weights(ModelImpl& model, const std::string& path, const std::string& format, WeightNames names,
                  std::map<std::string, std::string> metadata = {});

}  // namespace strata::models
