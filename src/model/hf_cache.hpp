// Owns naming a model: a folder path, or a Hugging Face repository id resolved offline in the local
// Hugging Face cache the way huggingface_hub lays it out. Nothing is ever downloaded.
#pragma once

#include <string>

namespace teap::model {

// The hub cache folder: $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (the older name), else
// $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
std::string hf_hub_cache_dir();

// An existing folder is returned as given (the revision is then ignored, as in transformers).
// Otherwise `name_or_path` must be a repository id "org/name": its snapshot folder
// `models--org--name/snapshots/<commit>` is returned, the commit being read from
// `refs/<revision or main>`, or being `revision` itself when that is a 40-hex commit hash.
// InputError when it is neither a folder nor an id, when the id or revision is not in the cache,
// or when a ref names a snapshot that is not there ("cache entry without a snapshot").
std::string resolve_model_path(const std::string& name_or_path, const std::string& revision = "");

// What Tokenizer::load takes for a --tokenizer argument: an existing file or folder as given,
// else a repository id resolved as resolve_model_path does (its snapshot folder). The same
// InputErrors for a name that is neither.
std::string resolve_tokenizer_path(const std::string& name_or_path, const std::string& revision = "");

}  // namespace teap::model
