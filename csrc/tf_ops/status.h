// How the core's exceptions become TensorFlow statuses; nothing throws out of
// a kernel's Compute.
#pragma once

#include <exception>
#include <new>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

#include "../core/error.h"

namespace tiemb {

/// Bad input (tiemb::error) -> InvalidArgument; a device that ran out of
/// memory, or a host allocation that failed -> ResourceExhausted; any other
/// device failure or unexpected exception -> Internal. Keeps the message.
inline absl::Status status_from_exception(const std::exception& e) {
  if (const auto* d = dynamic_cast<const device_error*>(&e)) {
    return d->out_of_memory() ? absl::ResourceExhaustedError(absl::StrCat("TiembLookup: ", e.what()))
                              : absl::InternalError(absl::StrCat("TiembLookup: ", e.what()));
  }
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("TiembLookup: out of host memory (", e.what(), ")"));
  }
  if (dynamic_cast<const error*>(&e) != nullptr) return absl::InvalidArgumentError(e.what());
  return absl::InternalError(absl::StrCat("TiembLookup: ", e.what()));
}

}  // namespace tiemb
