// Error reporting for the tiemb core.
//
// One exception type and one expectation macro: every check that depends on
// user input throws tiemb::error with a message that names the argument (the
// slot, the table) and the offending value. The bindings translate it into a
// Python ValueError and the TF kernels into InvalidArgument.
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
