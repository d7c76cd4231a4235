// Argument checking of the `rpujax_pulsed_update` FFI handlers, shared by the CPU handler
// (pulsed_cpu.cc) and the CUDA handler (pulsed_cuda.cu). The call is described in pulsed_cpu.cc and
// ffi/README.md §4.
#pragma once

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include "device_rules.h"
#include "xla/ffi/api/ffi.h"

namespace rpujax {
namespace pulsed {

namespace ffi = xla::ffi;

// The shapes of one call. An operand other than weights/persistent either carries the tile axis
// (stride = elements per tile) or is shared by all tiles (stride 0).
struct Layout {
  int kind = 0, mode = 0, bl_max = 0, nw = 0;  // nw: uint32 words per bit line
  int64_t T = 1, B = 0, D = 0, X = 0, P = 0;
  bool has_pers = false;
  int64_t params_ts = 0, px_ts = 0, pd_ts = 0, bl_ts = 0, key_ts = 0, ro_ts = 0;
  rules::Consts k;
};

inline std::string dims_str(ffi::Span<const int64_t> d) {
  std::string s = "(";
  for (size_t q = 0; q < d.size(); ++q) s += (q ? ", " : "") + std::to_string(d[q]);
  return s + (d.size() == 1 ? ",)" : ")");
}

inline ffi::Error invalid(const std::string& msg) {
  return ffi::Error::InvalidArgument("rpujax_pulsed_update: " + msg);
}

// An operand that may carry the tile axis: its trailing dims must be `want`. Sets the per-tile
// stride (0 when shared).
template <typename Buf>
std::optional<ffi::Error> tile_operand(const char* name, const Buf& buf, std::initializer_list<int64_t> want,
                                       int64_t T, bool tiled, int64_t* stride) {
  const auto d = buf.dimensions();
  const size_t r = want.size();
  int64_t per = 1;
  for (int64_t v : want) per *= v;
  bool ok = false;
  if (d.size() == r) {
    ok = std::equal(d.begin(), d.end(), want.begin());
    *stride = 0;
  } else if (d.size() == r + 1 && tiled) {
    ok = d[0] == T && std::equal(d.begin() + 1, d.end(), want.begin());
    *stride = per;
  }
  if (!ok) {
    std::string w = "(";
    size_t q = 0;
    for (int64_t v : want) w += (q++ ? ", " : "") + std::to_string(v);
    w += r == 1 ? ",)" : ")";
    if (tiled) w += " or (" + std::to_string(T) + ", " + w.substr(1);
    return invalid(std::string(name) + " has shape " + dims_str(d) + ", expected " + w);
  }
  return std::nullopt;
}

// Operands, results and attributes of `rpujax_pulsed_update` in call order (ffi/README.md §4), to
// append to a binding that holds the platform's context arguments, so that the CPU and the CUDA
// handler cannot drift apart: `ffi::Ffi::Bind().Ctx<...>() RPUJAX_PULSED_UPDATE_SIGNATURE`.
#define RPUJAX_PULSED_UPDATE_SIGNATURE               \
  .Arg<::xla::ffi::Buffer<::xla::ffi::F32>>() /* weights */    \
      .Arg<::xla::ffi::Buffer<::xla::ffi::F32>>() /* persistent */ \
      .Arg<::xla::ffi::Buffer<::xla::ffi::F32>>() /* params */     \
      .Arg<::xla::ffi::Buffer<::xla::ffi::F32>>() /* px */         \
      .Arg<::xla::ffi::Buffer<::xla::ffi::F32>>() /* pd */         \
      .Arg<::xla::ffi::Buffer<::xla::ffi::S32>>() /* bl */         \
      .Arg<::xla::ffi::Buffer<::xla::ffi::U32>>() /* key */        \
      .Arg<::xla::ffi::Buffer<::xla::ffi::S32>>() /* row_offset */ \
      .Ret<::xla::ffi::Buffer<::xla::ffi::F32>>() /* weights */    \
      .Ret<::xla::ffi::Buffer<::xla::ffi::F32>>() /* persistent */ \
      .Attr<int32_t>("kind")                                         \
      .Attr<int32_t>("mode")                                         \
      .Attr<int32_t>("bl_max")                                       \
      .Attr<::xla::ffi::Span<const double>>("scalars")

// Checks the operands and attributes of a call and fills `lay`.
inline std::optional<ffi::Error> make_layout(const ffi::Buffer<ffi::F32>& w, const ffi::Buffer<ffi::F32>& pers,
                                             const ffi::Buffer<ffi::F32>& params, const ffi::Buffer<ffi::F32>& px,
                                             const ffi::Buffer<ffi::F32>& pd, const ffi::Buffer<ffi::S32>& bl,
                                             const ffi::Buffer<ffi::U32>& key, const ffi::Buffer<ffi::S32>& row_offset,
                                             int32_t kind, int32_t mode,
                                             int32_t bl_max, ffi::Span<const double> scalars, Layout* lay) {
  if (kind < 0 || kind >= rules::kNumKinds) return invalid("unknown device kind " + std::to_string(kind));
  if (mode < 0 || mode > 2) return invalid("mode must be 0, 1 or 2, got " + std::to_string(mode));
  // pulse numbers and positions go into the 28-bit `sub` field of the counters
  if (bl_max < 0 || bl_max > (1 << 20)) return invalid("bl_max must be in [0, 2^20], got " + std::to_string(bl_max));
  if (const char* err = rules::make_consts(kind, scalars.begin(), static_cast<int64_t>(scalars.size()), &lay->k))
    return invalid("kind " + std::to_string(kind) + ": " + err);
  const auto wd = w.dimensions();
  if (wd.size() != 2 && wd.size() != 3) return invalid("weights must be (D, X) or (T, D, X), got " + dims_str(wd));
  const bool tiled = wd.size() == 3;
  lay->kind = kind;
  lay->mode = mode;
  lay->bl_max = bl_max;
  lay->nw = (bl_max + 31) / 32;
  lay->T = tiled ? wd[0] : 1;
  lay->D = wd[wd.size() - 2];
  lay->X = wd[wd.size() - 1];
  lay->P = rules::num_params(kind);
  if (lay->D * lay->X >= (int64_t{1} << 32)) return invalid("a tile must have fewer than 2^32 elements");
  const auto bd = bl.dimensions();
  if (bd.size() == 0) return invalid("bl must be (B,) or (T, B), got " + dims_str(bd));
  lay->B = bd[bd.size() - 1];
  if (auto e = tile_operand("params", params, {lay->P, lay->D, lay->X}, lay->T, tiled, &lay->params_ts)) return e;
  if (auto e = tile_operand("px", px, {lay->B, lay->X}, lay->T, tiled, &lay->px_ts)) return e;
  if (auto e = tile_operand("pd", pd, {lay->B, lay->D}, lay->T, tiled, &lay->pd_ts)) return e;
  if (auto e = tile_operand("bl", bl, {lay->B}, lay->T, tiled, &lay->bl_ts)) return e;
  if (auto e = tile_operand("key", key, {2}, lay->T, tiled, &lay->key_ts)) return e;
  if (auto e = tile_operand("row_offset", row_offset, {}, lay->T, tiled, &lay->ro_ts)) return e;
  lay->has_pers = pers.element_count() > 0;
  if (lay->has_pers) {
    const auto pdims = pers.dimensions();
    if (!std::equal(pdims.begin(), pdims.end(), wd.begin(), wd.end()))
      return invalid("persistent has shape " + dims_str(pdims) + ", expected the shape of weights " + dims_str(wd) +
                     " (or (0,) for none)");
  }
  return std::nullopt;
}

}  // namespace pulsed
}  // namespace rpujax
