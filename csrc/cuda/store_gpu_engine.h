// GPU engines built from table stores, shared process-wide (the TensorFlow
// op's GPU kernel uses them).
#pragma once

#include <memory>
#include <string>

#include "../core/table_store.h"
#include "../core/tier_config.h"
#include "gpu_engine.h"

namespace tiemb {

/// The tiers of a store's tables: tiemb/cache_percentage,
/// tiemb/cpu_cache_percentage and tiemb/hit_rate_threshold of
/// <dir>/tiemb_config.json (written by tiemb.optimize()) where present,
/// else the parameters' defaults (kDefaultCachePercentage, ...). Throws naming the file on a malformed value.
tier_config store_tiers(const std::string& dir);

/// One GPU engine per (store directory, device) per process, created with
/// all tables loaded on first use (tiers from store_tiers; tiered tables keep
/// their backing file under $TMPDIR), released with its last user.
std::shared_ptr<gpu_engine> shared_gpu_engine(const std::string& dir, int device, const store_manifest** manifest);

}  // namespace tiemb
