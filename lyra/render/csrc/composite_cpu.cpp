// Front-to-back alpha compositing of projected Gaussians on the CPU, with gsplat's semantics.
//
// The compiled twin of lyra/render/composite_torch.py (the plain PyTorch reference it is tested
// against). Per pixel, in depth order: alpha = min(0.999, opacity * exp(-sigma)); pairs with
// sigma < 0 or alpha < 1/255 are skipped, and compositing stops *before* the Gaussian that would
// bring the transmittance to <= 1e-4.
//
// Tile-major, like gsplat's CUDA kernels: `composite_bin` lists, for every 16x16 tile, the
// Gaussians whose alpha >= 1/255 ellipse can reach it, in depth order; forward and backward then
// work one tile at a time (the tiles of all images in parallel), with the tile's per-pixel state
// (transmittance, colour, stop rank) in a few KB that stay in cache. A tile whose pixels have all
// stopped ends its list early. Per-pair arithmetic runs in the input's precision (float32 for the
// usual inputs); transmittance and colour sums are carried in double, so the early stop and the
// backward's recovery of transmittance (dividing by 1 - alpha, as gsplat does) stay exact.
//
// The backward writes each (tile, Gaussian) entry's gradient sum to its own slot and reduces the
// slots per Gaussian afterwards in a fixed order: no atomics, and the same result for any thread
// count.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr double kAlphaThreshold = 1.0 / 255.0;
constexpr double kMaxAlpha = 0.999;
constexpr double kMinTransmittance = 1e-4;
constexpr int64_t kGradSlots = 6;  // per entry: d/d means2d (2), conics (3), opacity (1); then colours

// The sigma below which a Gaussian of opacity op reaches alpha >= 1/255: ln(255 op), <= 0 when
// it never does. Forward, backward and binning all test against this one level.
inline double alpha_level(double op) { return std::log(std::max(op, kAlphaThreshold) / kAlphaThreshold); }

// The same level with a margin for float32 round-off: a sigma above it cannot give alpha >= 1/255,
// so the pair is skipped before its exp (the exact alpha test still decides the rest).
template <typename scalar_t>
inline scalar_t sigma_cutoff(double level) { return scalar_t(level * (1.0 + 1e-4) + 1e-6); }

// The pixel rectangle [x0, x1) x [y0, y1) where a Gaussian can reach alpha >= 1/255: its tile box
// intersected with the bounding box of the ellipse sigma <= ln(255 opacity), one pixel of slack
// (the exact per-pixel test decides). Empty when the opacity is below the threshold.
template <typename scalar_t>
inline void reach(const scalar_t* m2, const scalar_t* q, scalar_t op, const int64_t* box, int32_t* rect) {
  int64_t x0 = box[0], x1 = box[1], y0 = box[2], y1 = box[3];
  const double level = alpha_level(double(op));
  if (level <= 0) {
    rect[0] = rect[1] = static_cast<int32_t>(x0);
    rect[2] = rect[3] = static_cast<int32_t>(y0);
    return;
  }
  const double det = std::max(double(q[0]) * double(q[2]) - double(q[1]) * double(q[1]), 1e-20);
  const double ex = std::sqrt(2.0 * level * double(q[2]) / det), ey = std::sqrt(2.0 * level * double(q[0]) / det);
  const double mx = double(m2[0]), my = double(m2[1]);
  // Clamp in double before the integer cast: a huge ellipse must not overflow.
  auto lo = [](double v, int64_t bound) { return std::max(bound, static_cast<int64_t>(std::max(v, -1.0))); };
  auto hi = [](double v, int64_t bound) { return std::min(bound, static_cast<int64_t>(std::min(v, 1e9))); };
  x0 = lo(std::ceil(mx - ex - 0.5) - 1, x0);
  x1 = hi(std::floor(mx + ex - 0.5) + 2, x1);
  y0 = lo(std::ceil(my - ey - 0.5) - 1, y0);
  y1 = hi(std::floor(my + ey - 0.5) + 2, y1);
  rect[0] = static_cast<int32_t>(x0), rect[1] = static_cast<int32_t>(std::max(x0, x1));
  rect[2] = static_cast<int32_t>(y0), rect[3] = static_cast<int32_t>(std::max(y0, y1));
}

// The columns [x0, x1) of row y where sigma <= level can hold (the ellipse's chord, widened by one
// pixel each side so rounding cannot drop a pixel; the exact per-pixel test decides). Translucent
// Gaussians reach far past their core: visiting only the chord skips most of their bounding box.
template <typename scalar_t>
inline void chord(double mx, double dy, double a, double b, double c, double level, int64_t& x0, int64_t& x1) {
  const double disc = b * b * dy * dy - a * (c * dy * dy - 2.0 * level);
  if (disc < 0 || a <= 0) {
    if (a > 0) x1 = x0;  // the row misses the ellipse (a <= 0: degenerate conic, keep the whole row)
    return;
  }
  const double root = std::sqrt(disc);
  // sigma(dx) = 0.5 a dx^2 + b dy dx + 0.5 c dy^2 with dx = mx - (x + 0.5).
  const double dx_lo = (-b * dy - root) / a, dx_hi = (-b * dy + root) / a;
  const double lo = std::floor(mx - 0.5 - dx_hi) - 1, hi = std::ceil(mx - 0.5 - dx_lo) + 2;
  if (lo > double(x0)) x0 = std::min(x1, static_cast<int64_t>(lo));
  if (hi < double(x1)) x1 = std::max(x0, static_cast<int64_t>(hi));
}

struct Tiles {
  int64_t size, tw, th, width, height;
  int64_t count() const { return tw * th; }
  // Pixel bounds of tile t.
  void bounds(int64_t t, int64_t& x0, int64_t& x1, int64_t& y0, int64_t& y1) const {
    const int64_t ty = t / tw, tx = t % tw;
    x0 = tx * size, y0 = ty * size;
    x1 = std::min(width, x0 + size), y1 = std::min(height, y0 + size);
  }
};

inline Tiles make_tiles(int64_t width, int64_t height, int64_t tile_size) {
  return {tile_size, (width + tile_size - 1) / tile_size, (height + tile_size - 1) / tile_size, width, height};
}

}  // namespace

// Returns {rects [I, N, 4] int32 (x0, x1, y0, y1 of each Gaussian's reach), offsets [I * tiles + 1]
// int64, ranks [E] int32}: the depth ranks of the Gaussians reaching each tile, tile by tile
// (images in order, tiles row-major), each list in depth order.
std::vector<torch::Tensor> composite_bin(
    torch::Tensor means2d,    // [I, N, 2]
    torch::Tensor conics,     // [I, N, 3]
    torch::Tensor opacities,  // [I, N]
    torch::Tensor boxes,      // [I, N, 4] int64 pixel box x0, x1, y0, y1 (tile aligned)
    torch::Tensor order,      // [I, N] int64 Gaussian ids in depth order (valid ones first)
    torch::Tensor n_valid,    // [I] int64 number of valid (not culled) Gaussians
    int64_t width, int64_t height, int64_t tile_size) {
  const int64_t I = opacities.size(0), N = opacities.size(1);
  const Tiles tiles = make_tiles(width, height, tile_size);
  const int64_t nt = tiles.count();
  auto rects = torch::zeros({I, N, 4}, torch::kInt32);
  auto counts = torch::zeros({I * nt + 1}, torch::kInt64);
  int32_t* rc = rects.data_ptr<int32_t>();
  int64_t* cnt = counts.data_ptr<int64_t>();
  const int64_t* ra = order.data_ptr<int64_t>();
  const int64_t* na = n_valid.data_ptr<int64_t>();
  const int64_t* ba = boxes.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(conics.scalar_type(), "lyra_composite_bin", [&] {
    const scalar_t* m2 = means2d.data_ptr<scalar_t>();
    const scalar_t* q = conics.data_ptr<scalar_t>();
    const scalar_t* op = opacities.data_ptr<scalar_t>();
    at::parallel_for(0, I, 1, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        int64_t* c = cnt + 1 + i * nt;
        for (int64_t r = 0; r < na[i]; ++r) {
          const int64_t g = i * N + ra[i * N + r];
          int32_t* rect = rc + g * 4;
          reach<scalar_t>(m2 + g * 2, q + g * 3, op[g], ba + g * 4, rect);
          if (rect[0] >= rect[1] || rect[2] >= rect[3]) continue;
          for (int64_t ty = rect[2] / tile_size; ty * tile_size < rect[3]; ++ty)
            for (int64_t tx = rect[0] / tile_size; tx * tile_size < rect[1]; ++tx) ++c[ty * tiles.tw + tx];
        }
      }
    });
  });
  auto offsets = counts.cumsum(0);
  const int64_t E = offsets[-1].item<int64_t>();
  auto ranks = torch::empty({E}, torch::kInt32);
  const int64_t* off = offsets.data_ptr<int64_t>();
  int32_t* rk = ranks.data_ptr<int32_t>();
  at::parallel_for(0, I, 1, [&](int64_t i0, int64_t i1) {
    std::vector<int64_t> fill;
    for (int64_t i = i0; i < i1; ++i) {
      fill.assign(off + i * nt, off + (i + 1) * nt);
      for (int64_t r = 0; r < na[i]; ++r) {
        const int32_t* rect = rc + (i * N + ra[i * N + r]) * 4;
        if (rect[0] >= rect[1] || rect[2] >= rect[3]) continue;
        for (int64_t ty = rect[2] / tile_size; ty * tile_size < rect[3]; ++ty)
          for (int64_t tx = rect[0] / tile_size; tx * tile_size < rect[1]; ++tx)
            rk[fill[ty * tiles.tw + tx]++] = static_cast<int32_t>(r);
      }
    }
  });
  return {rects, offsets, ranks};
}

// Returns {render [I, H, W, D], final transmittance T [I, H, W] (double), stop rank [I, H, W]
// (int32: the rank of the Gaussian before which the pixel stopped, n_valid if never), tile_last
// [I * tiles] int32 (the largest stop rank in each tile)}.
std::vector<torch::Tensor> composite_forward(
    torch::Tensor means2d,     // [I, N, 2]
    torch::Tensor conics,      // [I, N, 3]
    torch::Tensor colors,      // [I, N, D]
    torch::Tensor opacities,   // [I, N]
    torch::Tensor order,       // [I, N] int64
    torch::Tensor n_valid,     // [I] int64
    torch::Tensor rects,       // [I, N, 4] int32, from composite_bin
    torch::Tensor offsets,     // [I * tiles + 1] int64
    torch::Tensor ranks,       // [E] int32
    torch::Tensor background,  // [I, D]
    int64_t width, int64_t height, int64_t tile_size) {
  const int64_t I = opacities.size(0), N = opacities.size(1), D = colors.size(2), HW = height * width;
  const Tiles tiles = make_tiles(width, height, tile_size);
  const int64_t nt = tiles.count();
  auto render = torch::empty({I, height, width, D}, colors.options());
  auto t_final = torch::empty({I, height, width}, colors.options().dtype(torch::kFloat64));
  auto stop = torch::empty({I, height, width}, colors.options().dtype(torch::kInt32));
  auto tile_last = torch::empty({I * nt}, torch::kInt32);
  const int64_t* ra = order.data_ptr<int64_t>();
  const int64_t* na = n_valid.data_ptr<int64_t>();
  const int32_t* rc = rects.data_ptr<int32_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t* rk = ranks.data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "lyra_composite_forward", [&] {
    const scalar_t* m2a = means2d.data_ptr<scalar_t>();
    const scalar_t* qa = conics.data_ptr<scalar_t>();
    const scalar_t* ca = colors.data_ptr<scalar_t>();
    const scalar_t* oa = opacities.data_ptr<scalar_t>();
    const scalar_t* bga = background.data_ptr<scalar_t>();
    scalar_t* out = render.data_ptr<scalar_t>();
    double* tf = t_final.data_ptr<double>();
    int32_t* st = stop.data_ptr<int32_t>();
    int32_t* tl = tile_last.data_ptr<int32_t>();
    at::parallel_for(0, I * nt, 1, [&](int64_t t0, int64_t t1) {
      const int64_t S = tile_size * tile_size;
      std::vector<double> T(S), accum(S * D);
      std::vector<int32_t> stop_t(S);
      for (int64_t it = t0; it < t1; ++it) {
        const int64_t i = it / nt;
        int64_t px0, px1, py0, py1;
        tiles.bounds(it % nt, px0, px1, py0, py1);
        const int64_t tw = px1 - px0;
        const int32_t never = static_cast<int32_t>(na[i]);
        int64_t live = tw * (py1 - py0);
        std::fill(T.begin(), T.end(), 1.0);
        std::fill(accum.begin(), accum.end(), 0.0);
        std::fill(stop_t.begin(), stop_t.end(), never);
        for (int64_t e = off[it]; e < off[it + 1] && live > 0; ++e) {
          const int32_t r = rk[e];
          const int64_t g = i * N + ra[i * N + r];
          const int32_t* rect = rc + g * 4;
          const scalar_t mx = m2a[g * 2], my = m2a[g * 2 + 1];
          const scalar_t a = qa[g * 3], b = qa[g * 3 + 1], c = qa[g * 3 + 2], op = oa[g];
          const scalar_t* col = ca + g * D;
          const int64_t x0 = std::max<int64_t>(px0, rect[0]), x1 = std::min<int64_t>(px1, rect[1]);
          const int64_t y0 = std::max<int64_t>(py0, rect[2]), y1 = std::min<int64_t>(py1, rect[3]);
          const double level = alpha_level(double(op));
          const scalar_t cutoff = sigma_cutoff<scalar_t>(level);
          for (int64_t y = y0; y < y1; ++y) {
            const scalar_t dy = my - (scalar_t(y) + scalar_t(0.5));
            const scalar_t row = scalar_t(0.5) * c * dy * dy, cross = b * dy;
            int64_t cx0 = x0, cx1 = x1;
            chord<scalar_t>(mx, dy, a, b, c, level, cx0, cx1);
            for (int64_t x = cx0; x < cx1; ++x) {
              const int64_t p = (y - py0) * tw + (x - px0);
              if (stop_t[p] != never) continue;
              const scalar_t dx = mx - (scalar_t(x) + scalar_t(0.5));
              const scalar_t sigma = scalar_t(0.5) * a * dx * dx + cross * dx + row;
              if (sigma < 0 || sigma > cutoff) continue;
              const double alpha = std::min(kMaxAlpha, double(op * std::exp(-sigma)));
              if (alpha < kAlphaThreshold) continue;
              const double next_t = T[p] * (1.0 - alpha);
              if (next_t <= kMinTransmittance) {  // stop before this Gaussian
                stop_t[p] = r;
                --live;
                continue;
              }
              const double w = alpha * T[p];
              for (int64_t d = 0; d < D; ++d) accum[p * D + d] += w * double(col[d]);
              T[p] = next_t;
            }
          }
        }
        int32_t last = 0;
        for (int64_t y = py0; y < py1; ++y)
          for (int64_t x = px0; x < px1; ++x) {
            const int64_t p = (y - py0) * tw + (x - px0), q = i * HW + y * width + x;
            tf[q] = T[p];
            st[q] = stop_t[p];
            last = std::max(last, stop_t[p]);
            for (int64_t d = 0; d < D; ++d)
              out[q * D + d] = static_cast<scalar_t>(accum[p * D + d] + T[p] * double(bga[i * D + d]));
          }
        tl[it] = last;
      }
    });
  });
  return {render, t_final, stop, tile_last};
}

// Returns {v_means2d [I, N, 2], v_conics [I, N, 3], v_colors [I, N, D], v_opacities [I, N],
// v_background [I, D]}.
std::vector<torch::Tensor> composite_backward(
    torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors, torch::Tensor opacities,
    torch::Tensor order, torch::Tensor n_valid, torch::Tensor rects, torch::Tensor offsets, torch::Tensor ranks,
    torch::Tensor background,
    torch::Tensor t_final,      // [I, H, W] double, from the forward
    torch::Tensor stop,         // [I, H, W] int32, from the forward
    torch::Tensor tile_last,    // [I * tiles] int32, from the forward
    torch::Tensor grad_render,  // [I, H, W, D]
    torch::Tensor grad_alpha,   // [I, H, W]
    int64_t width, int64_t height, int64_t tile_size) {
  const int64_t I = opacities.size(0), N = opacities.size(1), D = colors.size(2), HW = height * width;
  const Tiles tiles = make_tiles(width, height, tile_size);
  const int64_t nt = tiles.count();
  const int64_t E = ranks.size(0), slots = kGradSlots + D;
  auto v_m2 = torch::zeros_like(means2d);
  auto v_q = torch::zeros_like(conics);
  auto v_c = torch::zeros_like(colors);
  auto v_o = torch::zeros_like(opacities);
  auto v_bg = torch::zeros_like(background);
  auto entry_grad = torch::zeros({E, slots}, torch::kFloat64);
  const int64_t* ra = order.data_ptr<int64_t>();
  const int32_t* rc = rects.data_ptr<int32_t>();
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int32_t* rk = ranks.data_ptr<int32_t>();
  const double* tf = t_final.data_ptr<double>();
  const int32_t* st = stop.data_ptr<int32_t>();
  const int32_t* tl = tile_last.data_ptr<int32_t>();
  double* eg = entry_grad.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "lyra_composite_backward", [&] {
    const scalar_t* m2a = means2d.data_ptr<scalar_t>();
    const scalar_t* qa = conics.data_ptr<scalar_t>();
    const scalar_t* ca = colors.data_ptr<scalar_t>();
    const scalar_t* oa = opacities.data_ptr<scalar_t>();
    const scalar_t* bga = background.data_ptr<scalar_t>();
    const scalar_t* gr = grad_render.data_ptr<scalar_t>();
    const scalar_t* ga = grad_alpha.data_ptr<scalar_t>();
    at::parallel_for(0, I * nt, 1, [&](int64_t t0, int64_t t1) {
      const int64_t S = tile_size * tile_size;
      std::vector<double> T(S), behind(S * D), grad(S * D), g_alpha(S);
      std::vector<int32_t> stop_t(S);
      for (int64_t it = t0; it < t1; ++it) {
        const int64_t i = it / nt;
        int64_t px0, px1, py0, py1;
        tiles.bounds(it % nt, px0, px1, py0, py1);
        const int64_t tw = px1 - px0;
        for (int64_t y = py0; y < py1; ++y)
          for (int64_t x = px0; x < px1; ++x) {
            const int64_t p = (y - py0) * tw + (x - px0), q = i * HW + y * width + x;
            T[p] = tf[q];  // transmittance behind the pairs visited so far
            stop_t[p] = st[q];
            // The alpha output's gradient enters as d alpha_final / d alpha_k = T_final / (1 - alpha_k).
            g_alpha[p] = double(ga[q]) * tf[q];
            for (int64_t d = 0; d < D; ++d) {
              behind[p * D + d] = tf[q] * double(bga[i * D + d]);
              grad[p * D + d] = double(gr[q * D + d]);
            }
          }
        const int32_t last = tl[it];
        for (int64_t e = off[it + 1] - 1; e >= off[it]; --e) {
          const int32_t r = rk[e];
          if (r >= last) continue;  // every pixel of the tile stopped at or before it
          const int64_t g = i * N + ra[i * N + r];
          const int32_t* rect = rc + g * 4;
          const scalar_t mx = m2a[g * 2], my = m2a[g * 2 + 1];
          const scalar_t a = qa[g * 3], b = qa[g * 3 + 1], c = qa[g * 3 + 2], op = oa[g];
          const scalar_t* col = ca + g * D;
          const int64_t x0 = std::max<int64_t>(px0, rect[0]), x1 = std::min<int64_t>(px1, rect[1]);
          const int64_t y0 = std::max<int64_t>(py0, rect[2]), y1 = std::min<int64_t>(py1, rect[3]);
          double* out = eg + e * slots;
          const double level = alpha_level(double(op));
          const scalar_t cutoff = sigma_cutoff<scalar_t>(level);
          for (int64_t y = y0; y < y1; ++y) {
            const scalar_t dy = my - (scalar_t(y) + scalar_t(0.5));
            const scalar_t row = scalar_t(0.5) * c * dy * dy, cross = b * dy;
            int64_t cx0 = x0, cx1 = x1;
            chord<scalar_t>(mx, dy, a, b, c, level, cx0, cx1);
            for (int64_t x = cx0; x < cx1; ++x) {
              const int64_t p = (y - py0) * tw + (x - px0);
              if (stop_t[p] <= r) continue;  // the pixel stopped at or before this Gaussian
              const scalar_t dx = mx - (scalar_t(x) + scalar_t(0.5));
              const scalar_t sigma = scalar_t(0.5) * a * dx * dx + cross * dx + row;
              if (sigma < 0 || sigma > cutoff) continue;
              const double falloff = double(std::exp(-sigma));
              const double raw_alpha = double(op) * falloff;
              const double alpha = std::min(kMaxAlpha, raw_alpha);
              if (alpha < kAlphaThreshold) continue;
              const double inv_one_m = 1.0 / (1.0 - alpha);
              const double t_before = T[p] * inv_one_m;
              const double w = alpha * t_before;
              double v_alpha = g_alpha[p], dot = 0.0;  // both divided by (1 - alpha) below
              double* bh = &behind[p * D];
              const double* gp = &grad[p * D];
              for (int64_t d = 0; d < D; ++d) {
                const double cd = double(col[d]);
                dot += gp[d] * cd;
                v_alpha -= gp[d] * bh[d];
                out[kGradSlots + d] += w * gp[d];
                bh[d] += w * cd;
              }
              v_alpha = v_alpha * inv_one_m + t_before * dot;
              T[p] = t_before;
              if (raw_alpha >= kMaxAlpha) continue;  // the 0.999 clamp has no gradient
              out[5] += v_alpha * falloff;
              const double v_sigma = -v_alpha * alpha;
              const double ddx = double(dx), ddy = double(dy);
              out[2] += v_sigma * 0.5 * ddx * ddx;
              out[3] += v_sigma * ddx * ddy;
              out[4] += v_sigma * 0.5 * ddy * ddy;
              out[0] += v_sigma * (double(a) * ddx + double(b) * ddy);
              out[1] += v_sigma * (double(b) * ddx + double(c) * ddy);
            }
          }
        }
      }
    });
    // Reduce the entries per Gaussian, image by image, in entry order: deterministic.
    scalar_t* vm = v_m2.data_ptr<scalar_t>();
    scalar_t* vq = v_q.data_ptr<scalar_t>();
    scalar_t* vc = v_c.data_ptr<scalar_t>();
    scalar_t* vo = v_o.data_ptr<scalar_t>();
    scalar_t* vb = v_bg.data_ptr<scalar_t>();
    at::parallel_for(0, I, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> acc;
      for (int64_t i = i0; i < i1; ++i) {
        acc.assign(N * slots, 0.0);
        for (int64_t e = off[i * nt]; e < off[(i + 1) * nt]; ++e) {
          const int64_t g = ra[i * N + rk[e]];
          for (int64_t s = 0; s < slots; ++s) acc[g * slots + s] += eg[e * slots + s];
        }
        for (int64_t g = 0; g < N; ++g) {
          const double* s = acc.data() + g * slots;
          const int64_t k = i * N + g;
          vm[k * 2] = static_cast<scalar_t>(s[0]), vm[k * 2 + 1] = static_cast<scalar_t>(s[1]);
          vq[k * 3] = static_cast<scalar_t>(s[2]), vq[k * 3 + 1] = static_cast<scalar_t>(s[3]);
          vq[k * 3 + 2] = static_cast<scalar_t>(s[4]);
          vo[k] = static_cast<scalar_t>(s[5]);
          for (int64_t d = 0; d < D; ++d) vc[k * D + d] = static_cast<scalar_t>(s[kGradSlots + d]);
        }
        for (int64_t d = 0; d < D; ++d) {
          double sum = 0.0;
          for (int64_t p = 0; p < HW; ++p) sum += tf[i * HW + p] * double(gr[(i * HW + p) * D + d]);
          vb[i * D + d] = static_cast<scalar_t>(sum);
        }
      }
    });
  });
  return {v_m2, v_q, v_c, v_o, v_bg};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("composite_bin", &composite_bin, "lyra: the depth-ordered Gaussians reaching each tile (CPU)");
  m.def("composite_forward", &composite_forward, "lyra: front-to-back Gaussian compositing (CPU)");
  m.def("composite_backward", &composite_backward, "lyra: its backward (CPU)");
}
