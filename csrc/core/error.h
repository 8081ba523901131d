// Error reporting for the tiemb core.
//
// One exception type and one expectation macro: every check that depends on
// user input throws tiemb::error with a message that names the argument (the
// slot, the table) and the offending value. The bindings translate it into a
// Python ValueError and the TF kernels into InvalidArgument.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tiemb {

/// Raised for any invalid input or configuration; the message is meant for
/// the person who supplied the input.
class error : public std::runtime_error {
 public:
  explicit error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
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
