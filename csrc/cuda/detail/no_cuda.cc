// Stand-ins compiled only when the build has no CUDA compiler, so the
// bindings can always ask what CUDA support exists.
#include "../device_info.h"

namespace tiemb {

bool cuda_compiled() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_name(int) { return ""; }
int cuda_runtime_version() { return 0; }
std::string cuda_architectures() { return ""; }
int cuda_current_device() { return -1; }

}  // namespace tiemb
