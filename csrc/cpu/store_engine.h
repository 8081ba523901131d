// CPU engines built from table stores, shared process-wide.
#pragma once

#include <memory>
#include <string>

#include "../core/table_store.h"
#include "cpu_engine.h"

namespace tiemb {

/// One CPU engine per store directory per process, shared by every op and
/// session that reads it; created (all tables loaded) on first use, released
/// with its last user. `manifest` receives the store's manifest.
std::shared_ptr<cpu_engine> shared_cpu_engine(const std::string& dir, const store_manifest** manifest);

}  // namespace tiemb
