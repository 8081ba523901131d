// GPU engines built from table stores, shared process-wide (the TensorFlow
// op's GPU kernel uses them).
#pragma once

#include <memory>
#include <string>

#include "../core/table_store.h"
#include "../core/tier_config.h"
#include "gpu_engine.h"

namespace tiemb {

/// One GPU engine per (store directory, device) per process, created with
/// all tables loaded on first use (tiers from the store's store.json; a
/// tiered table's cold rows are read from its own table file in the store,
/// nothing is written), released with its last user.
std::shared_ptr<gpu_engine> shared_gpu_engine(const std::string& dir, int device, const store_manifest** manifest);

}  // namespace tiemb
