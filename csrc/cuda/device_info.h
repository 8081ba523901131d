// What the CUDA part of this build can see at run time. Declared without CUDA
// headers so the bindings compile with or without the CUDA part.
#pragma once

#include <string>

namespace tiemb {

/// True when this build compiled the CUDA sources.
bool cuda_compiled();

/// Number of usable CUDA devices; 0 when the build has no CUDA part, no
/// driver is installed, or no device is visible.
int cuda_device_count();

/// Name of device `ordinal` (e.g. "NVIDIA H100 80GB HBM3"), "" if absent.
std::string cuda_device_name(int ordinal);

/// CUDA runtime version the build was compiled against (e.g. 13000), 0 without CUDA.
int cuda_runtime_version();

/// The architectures the CUDA part was compiled for, e.g. "75;80;86;90".
std::string cuda_architectures();

/// The calling thread's current CUDA device, -1 when there is none. The
/// modules above the core call the CUDA runtime only through it: the runtime
/// is linked into the core alone.
int cuda_current_device();

}  // namespace tiemb
