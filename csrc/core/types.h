// Enumerations shared by every layer. Each crosses the Python boundary as an
// int: keep the values in sync with tiemb/_enums.py.
#pragma once

#include <cstdint>
#include <string>

namespace tiemb {

/// How the embeddings of one sample's ids are reduced.
enum class combiner : int32_t { sum = 0, mean = 1, sqrtn = 2 };

/// How the output row count and invalid ids are treated.
///  plain: tf.nn.embedding_lookup_sparse — rows = max(segment id) + 1, every
///         id must be a valid row.
///  safe:  tf.nn.safe_embedding_lookup_sparse — rows given by the caller, ids
///         < 0 (and weights <= 0 unless the combiner is sum) are pruned, empty
///         rows are zeros or the default row.
///  gather: tf.gather(table, ids) / Keras Embedding — every id is its own
///         output row; no segment ids, no combining.
enum class row_mode : int32_t { plain = 0, safe = 1, gather = 2 };

/// Element types that appear at the engine boundary.
enum class dtype : int32_t { float32 = 0, float16 = 1, int32 = 2, int64 = 3 };

inline const char* to_string(combiner c) {
  switch (c) {
    case combiner::sum: return "sum";
    case combiner::mean: return "mean";
    case combiner::sqrtn: return "sqrtn";
  }
  return "?";
}

inline const char* to_string(row_mode m) {
  switch (m) {
    case row_mode::plain: return "plain";
    case row_mode::safe: return "safe";
    case row_mode::gather: return "gather";
  }
  return "?";
}

inline const char* to_string(dtype t) {
  switch (t) {
    case dtype::float32: return "float32";
    case dtype::float16: return "float16";
    case dtype::int32: return "int32";
    case dtype::int64: return "int64";
  }
  return "?";
}

/// Parses "sum" | "mean" | "sqrtn" (the names to_string gives); false for
/// anything else. Called once per slot where settings arrive as text (the
/// op's attributes), never per call.
inline bool parse_combiner(const std::string& name, combiner* out) {
  for (combiner c : {combiner::sum, combiner::mean, combiner::sqrtn}) {
    if (name == to_string(c)) {
      *out = c;
      return true;
    }
  }
  return false;
}

/// Parses "plain" | "safe" | "gather"; false for anything else.
inline bool parse_row_mode(const std::string& name, row_mode* out) {
  for (row_mode m : {row_mode::plain, row_mode::safe, row_mode::gather}) {
    if (name == to_string(m)) {
      *out = m;
      return true;
    }
  }
  return false;
}

inline int64_t size_of(dtype t) {
  return (t == dtype::float16) ? 2 : (t == dtype::int64 ? 8 : 4);
}

}  // namespace tiemb
