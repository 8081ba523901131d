// IEEE binary16 <-> binary32 conversion on the host.
//
// Written out in integer arithmetic so the core does not depend on F16C or on
// the compiler's _Float16 support; float -> half rounds to nearest even, as
// Eigen::half (and so TensorFlow) does.
#pragma once

#include <cstdint>
#include <cstring>

namespace tiemb {

inline float half_to_float(uint16_t h) {
  // Shift exponent and mantissa into place and rebias; inf/nan and
  // subnormals need one fix-up each (predictable branches on real tables).
  constexpr uint32_t shifted_exp = 0x7c00u << 13;
  uint32_t bits = (static_cast<uint32_t>(h) & 0x7fffu) << 13;
  const uint32_t exp = bits & shifted_exp;
  bits += (127u - 15u) << 23;
  if (exp == shifted_exp) {
    bits += (128u - 16u) << 23;  // inf / nan
  } else if (exp == 0) {
    bits += 1u << 23;  // subnormal: let the FPU renormalise
    float f;
    std::memcpy(&f, &bits, sizeof f);
    f -= 6.103515625e-05f;  // 2^-14
    std::memcpy(&bits, &f, sizeof f);
  }
  bits |= static_cast<uint32_t>(h & 0x8000u) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf / nan (keep nan quiet)
    return sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u);
  }
  if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflow to inf
    return sign | 0x7c00u;
  }
  if (abs < 0x38800000u) {  // below the smallest normal half: subnormal or 0
    // Add 0.5 (as a float) so the FPU's own round-to-nearest-even does the
    // rounding into the subnormal grid of 2^-24.
    float a;
    std::memcpy(&a, &abs, sizeof a);
    a += 0.5f;
    uint32_t r;
    std::memcpy(&r, &a, sizeof r);
    return sign | static_cast<uint16_t>(r - 0x3f000000u);
  }
  const uint32_t mant_odd = (abs >> 13) & 1u;
  uint32_t r = abs + 0xc8000fffu + mant_odd;  // rebias exponent, round to even
  return sign | static_cast<uint16_t>(r >> 13);
}

}  // namespace tiemb
