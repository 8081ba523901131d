// Error reporting for the tiemb core.
//
// Two exception types. Every check that depends on user input throws
// tiemb::error (through TIEMB_EXPECT) with a message that names the argument
// (the slot, the table) and the offending value: the bindings translate it
// into a Python ValueError and the TF kernels into InvalidArgument. A failure
// of the device itself (out of memory, a failed launch, a lost GPU) throws
// tiemb::device_error (through TIEMB_CUDA_CHECK): Python sees RuntimeError,
// TensorFlow ResourceExhausted (out of memory) or Internal. The caller can
// fix the first by changing the input, never the second.
#pragma once

#include <cstdio>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace tiemb {

/// Raised for any invalid input or configuration; the message is meant for
/// the person who supplied the input.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

/// Raised when the device fails, whatever the input: out of memory, a failed
/// launch or copy, a lost device. Deliberately not a tiemb::error, so that
/// no handler of bad input catches it.
class device_error : public std::runtime_error {
 public:
  device_error(const std::string& what, bool out_of_memory)
      : std::runtime_error(what), out_of_memory_(out_of_memory) {}
  /// True for an allocation the device could not satisfy (ResourceExhausted in TensorFlow).
  bool out_of_memory() const noexcept { return out_of_memory_; }

 private:
  bool out_of_memory_;
};

namespace detail {

// Message building without iostreams: no locale machinery, which crashed in
// one toolchain where the extension and the interpreter disagreed on it.
inline void append(std::string& out, const char* s) { out += s; }
inline void append(std::string& out, const std::string& s) { out += s; }
inline void append(std::string& out, char c) { out += c; }
inline void append(std::string& out, bool b) { out += b ? "true" : "false"; }

template <class T>
std::enable_if_t<std::is_integral_v<T>> append(std::string& out, T v) {
  out += std::to_string(v);
}

template <class T>
std::enable_if_t<std::is_floating_point_v<T>> append(std::string& out, T v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  out += buf;
}

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::string out;
  (append(out, parts), ...);
  return out;
}

}  // namespace detail
}  // namespace tiemb

/// Throws tiemb::error built from the remaining arguments when `cond` is
/// false. The message parts are only formatted on failure.
#define TIEMB_EXPECT(cond, ...)                                  \
  do {                                                           \
    if (!(cond)) {                                               \
      throw ::tiemb::error(::tiemb::detail::concat(__VA_ARGS__)); \
    }                                                            \
  } while (0)
