// Front-to-back alpha compositing of projected Gaussians on the CPU, with gsplat's semantics.
//
// The compiled twin of lyra/render/composite_torch.py (the plain PyTorch reference it is tested
// against). Gaussians are visited in depth order, each over the pixels of the 16x16 tiles its
// bounding box touches; per pixel: alpha = min(0.999, opacity * exp(-sigma)), pairs with
// sigma < 0 or alpha < 1/255 are skipped, and compositing stops *before* the Gaussian that would
// bring the transmittance to <= 1e-4. Per-pixel state (transmittance, the rank at which the pixel
// stopped) replaces the reference's list of pairs, so memory is O(pixels) and the work is one
// pass over (Gaussian, pixel) pairs. Tiles with no live pixel are skipped whole.
//
// The backward pass walks the Gaussians back to front and recovers each pixel's transmittance in
// front of a Gaussian by dividing by (1 - alpha), as gsplat's CUDA backward does; transmittance
// and the "colour behind" accumulator are kept in double precision.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

constexpr double kAlphaThreshold = 1.0 / 255.0;
constexpr double kMaxAlpha = 0.999;
constexpr double kMinTransmittance = 1e-4;

template <typename scalar_t>
struct Pair {
  bool hit;
  double alpha, falloff, dx, dy;
};

template <typename scalar_t>
inline Pair<scalar_t> eval_pair(const scalar_t* m2, const scalar_t* q, scalar_t op, int x, int y) {
  const double dx = double(m2[0]) - (x + 0.5);
  const double dy = double(m2[1]) - (y + 0.5);
  const double sigma = 0.5 * (double(q[0]) * dx * dx + double(q[2]) * dy * dy) + double(q[1]) * dx * dy;
  if (sigma < 0) return {false, 0, 0, dx, dy};
  const double falloff = std::exp(-sigma);
  const double alpha = std::min(kMaxAlpha, double(op) * falloff);
  if (alpha < kAlphaThreshold) return {false, 0, 0, dx, dy};
  return {true, alpha, falloff, dx, dy};
}

// The pixel rectangle [x0, x1) x [y0, y1) where a Gaussian can reach alpha >= 1/255: its tile box
// intersected with the bounding box of the ellipse sigma <= ln(255 opacity), one pixel of slack
// (the exact per-pixel test decides). Empty when the opacity is below the threshold.
template <typename scalar_t>
inline void reach(const scalar_t* m2, const scalar_t* q, scalar_t op, const int64_t* box, int64_t& x0, int64_t& x1,
                  int64_t& y0, int64_t& y1) {
  x0 = box[0], x1 = box[1], y0 = box[2], y1 = box[3];
  const double level = std::log(std::max(double(op), kAlphaThreshold) / kAlphaThreshold);
  const double det = std::max(double(q[0]) * double(q[2]) - double(q[1]) * double(q[1]), 1e-20);
  if (level <= 0) {
    x1 = x0, y1 = y0;
    return;
  }
  const double ex = std::sqrt(2.0 * level * double(q[2]) / det), ey = std::sqrt(2.0 * level * double(q[0]) / det);
  const double mx = double(m2[0]), my = double(m2[1]);
  x0 = std::max(x0, static_cast<int64_t>(std::ceil(mx - ex - 0.5)) - 1);
  x1 = std::min(x1, static_cast<int64_t>(std::floor(mx + ex - 0.5)) + 2);
  y0 = std::max(y0, static_cast<int64_t>(std::ceil(my - ey - 0.5)) - 1);
  y1 = std::min(y1, static_cast<int64_t>(std::floor(my + ey - 0.5)) + 2);
}

}  // namespace

// Returns {render [I, H, W, D], log-free final transmittance T [I, H, W] (double), stop rank
// [I, H, W] (int32: the rank of the Gaussian before which the pixel stopped, n_valid if never)}.
std::vector<torch::Tensor> composite_forward(
    torch::Tensor means2d,     // [I, N, 2]
    torch::Tensor conics,      // [I, N, 3]
    torch::Tensor colors,      // [I, N, D]
    torch::Tensor opacities,   // [I, N]
    torch::Tensor boxes,       // [I, N, 4] int64 pixel box x0, x1, y0, y1 (tile aligned)
    torch::Tensor order,       // [I, N] int64 Gaussian ids in depth order (valid ones first)
    torch::Tensor n_valid,     // [I] int64 number of valid (not culled) Gaussians
    torch::Tensor background,  // [I, D]
    int64_t width, int64_t height, int64_t tile_size) {
  const int64_t I = opacities.size(0), D = colors.size(2), HW = height * width;
  auto render = torch::empty({I, height, width, D}, colors.options());
  auto t_final = torch::empty({I, height, width}, colors.options().dtype(torch::kFloat64));
  auto stop = torch::empty({I, height, width}, colors.options().dtype(torch::kInt32));
  const int64_t tw = (width + tile_size - 1) / tile_size, th = (height + tile_size - 1) / tile_size;
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "lyra_composite_forward", [&] {
    auto m2a = means2d.accessor<scalar_t, 3>();
    auto qa = conics.accessor<scalar_t, 3>();
    auto ca = colors.accessor<scalar_t, 3>();
    auto oa = opacities.accessor<scalar_t, 2>();
    auto ba = boxes.accessor<int64_t, 3>();
    auto ra = order.accessor<int64_t, 2>();
    auto na = n_valid.accessor<int64_t, 1>();
    auto bga = background.accessor<scalar_t, 2>();
    scalar_t* out = render.data_ptr<scalar_t>();
    double* tf = t_final.data_ptr<double>();
    int32_t* st = stop.data_ptr<int32_t>();
    at::parallel_for(0, I, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> accum, T;
      std::vector<int32_t> live_in_tile;
      for (int64_t i = i0; i < i1; ++i) {
        accum.assign(HW * D, 0.0);
        T.assign(HW, 1.0);
        int32_t* stop_i = st + i * HW;
        const int32_t never = static_cast<int32_t>(na[i]);
        for (int64_t p = 0; p < HW; ++p) stop_i[p] = never;
        live_in_tile.assign(tw * th, 0);
        for (int64_t ty = 0; ty < th; ++ty)
          for (int64_t tx = 0; tx < tw; ++tx) {
            const int64_t h = std::min(tile_size, height - ty * tile_size), w = std::min(tile_size, width - tx * tile_size);
            live_in_tile[ty * tw + tx] = static_cast<int32_t>(h * w);
          }
        for (int64_t r = 0; r < na[i]; ++r) {
          const int64_t g = ra[i][r];
          const scalar_t* m2 = &m2a[i][g][0];
          const scalar_t* q = &qa[i][g][0];
          const scalar_t op = oa[i][g];
          int64_t x0, x1, y0, y1;
          reach<scalar_t>(m2, q, op, &ba[i][g][0], x0, x1, y0, y1);
          for (int64_t ty = y0 / tile_size; ty * tile_size < y1; ++ty) {
            for (int64_t tx = x0 / tile_size; tx * tile_size < x1; ++tx) {
              int32_t& live = live_in_tile[ty * tw + tx];
              if (live == 0) continue;  // every pixel of this tile has stopped
              const int64_t ye = std::min(y1, std::min(height, (ty + 1) * tile_size));
              const int64_t xe = std::min(x1, std::min(width, (tx + 1) * tile_size));
              for (int64_t y = std::max(y0, ty * tile_size); y < ye; ++y) {
                for (int64_t x = std::max(x0, tx * tile_size); x < xe; ++x) {
                  const int64_t p = y * width + x;
                  if (stop_i[p] != never) continue;
                  const Pair<scalar_t> pr = eval_pair<scalar_t>(m2, q, op, int(x), int(y));
                  if (!pr.hit) continue;
                  const double next_t = T[p] * (1.0 - pr.alpha);
                  if (next_t <= kMinTransmittance) {  // stop before this Gaussian
                    stop_i[p] = static_cast<int32_t>(r);
                    --live;
                    continue;
                  }
                  const double w = pr.alpha * T[p];
                  for (int64_t d = 0; d < D; ++d) accum[p * D + d] += w * double(ca[i][g][d]);
                  T[p] = next_t;
                }
              }
            }
          }
        }
        for (int64_t p = 0; p < HW; ++p) {
          tf[i * HW + p] = T[p];
          for (int64_t d = 0; d < D; ++d)
            out[(i * HW + p) * D + d] = static_cast<scalar_t>(accum[p * D + d] + T[p] * double(bga[i][d]));
        }
      }
    });
  });
  return {render, t_final, stop};
}

// Returns {v_means2d [I, N, 2], v_conics [I, N, 3], v_colors [I, N, D], v_opacities [I, N],
// v_background [I, D]}.
std::vector<torch::Tensor> composite_backward(
    torch::Tensor means2d, torch::Tensor conics, torch::Tensor colors, torch::Tensor opacities,
    torch::Tensor boxes, torch::Tensor order, torch::Tensor n_valid, torch::Tensor background,
    torch::Tensor t_final,     // [I, H, W] double, from the forward
    torch::Tensor stop,        // [I, H, W] int32, from the forward
    torch::Tensor grad_render, // [I, H, W, D]
    torch::Tensor grad_alpha,  // [I, H, W]
    int64_t width, int64_t height, int64_t tile_size) {
  const int64_t I = opacities.size(0), N = opacities.size(1), D = colors.size(2), HW = height * width;
  const int64_t tw = (width + tile_size - 1) / tile_size, th = (height + tile_size - 1) / tile_size;
  auto v_m2 = torch::zeros_like(means2d);
  auto v_q = torch::zeros_like(conics);
  auto v_c = torch::zeros_like(colors);
  auto v_o = torch::zeros_like(opacities);
  auto v_bg = torch::zeros_like(background);
  AT_DISPATCH_FLOATING_TYPES(colors.scalar_type(), "lyra_composite_backward", [&] {
    auto m2a = means2d.accessor<scalar_t, 3>();
    auto qa = conics.accessor<scalar_t, 3>();
    auto ca = colors.accessor<scalar_t, 3>();
    auto oa = opacities.accessor<scalar_t, 2>();
    auto ba = boxes.accessor<int64_t, 3>();
    auto ra = order.accessor<int64_t, 2>();
    auto na = n_valid.accessor<int64_t, 1>();
    auto bga = background.accessor<scalar_t, 2>();
    const double* tf = t_final.data_ptr<double>();
    const int32_t* st = stop.data_ptr<int32_t>();
    auto gr = grad_render.accessor<scalar_t, 4>();
    auto ga = grad_alpha.accessor<scalar_t, 3>();
    auto vm = v_m2.accessor<scalar_t, 3>();
    auto vq = v_q.accessor<scalar_t, 3>();
    auto vc = v_c.accessor<scalar_t, 3>();
    auto vo = v_o.accessor<scalar_t, 2>();
    auto vb = v_bg.accessor<scalar_t, 2>();
    at::parallel_for(0, I, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> T, behind, gsum(D);
      std::vector<int32_t> tile_last;  // per tile: the largest stop rank of its pixels
      for (int64_t i = i0; i < i1; ++i) {
        T.assign(tf + i * HW, tf + (i + 1) * HW);  // transmittance behind the pairs visited so far
        behind.assign(HW * D, 0.0);
        for (int64_t d = 0; d < D; ++d) gsum[d] = 0.0;
        for (int64_t p = 0; p < HW; ++p) {
          const int64_t y = p / width, x = p % width;
          for (int64_t d = 0; d < D; ++d) {
            behind[p * D + d] = T[p] * double(bga[i][d]);
            gsum[d] += T[p] * double(gr[i][y][x][d]);
          }
        }
        for (int64_t d = 0; d < D; ++d) vb[i][d] = static_cast<scalar_t>(gsum[d]);
        const int32_t* stop_i = st + i * HW;
        tile_last.assign(tw * th, 0);
        for (int64_t p = 0; p < HW; ++p) {
          int32_t& m = tile_last[(p / width / tile_size) * tw + (p % width) / tile_size];
          m = std::max(m, stop_i[p]);
        }
        for (int64_t r = na[i] - 1; r >= 0; --r) {
          const int64_t g = ra[i][r];
          const scalar_t* m2 = &m2a[i][g][0];
          const scalar_t* q = &qa[i][g][0];
          const scalar_t op = oa[i][g];
          int64_t x0, x1, y0, y1;
          reach<scalar_t>(m2, q, op, &ba[i][g][0], x0, x1, y0, y1);
          double g_m0 = 0, g_m1 = 0, g_q0 = 0, g_q1 = 0, g_q2 = 0, g_o = 0;
          for (int64_t ty = y0 / tile_size; ty * tile_size < y1; ++ty) {
           for (int64_t tx = x0 / tile_size; tx * tile_size < x1; ++tx) {
            if (tile_last[ty * tw + tx] <= r) continue;  // every pixel of the tile stopped before it
            const int64_t ye = std::min(y1, std::min(height, (ty + 1) * tile_size));
            const int64_t xe = std::min(x1, std::min(width, (tx + 1) * tile_size));
            for (int64_t y = std::max(y0, ty * tile_size); y < ye; ++y) {
             for (int64_t x = std::max(x0, tx * tile_size); x < xe; ++x) {
              const int64_t p = y * width + x;
              if (stop_i[p] <= r) continue;  // the pixel stopped at or before this Gaussian
              const Pair<scalar_t> pr = eval_pair<scalar_t>(m2, q, op, int(x), int(y));
              if (!pr.hit) continue;
              const double one_m = 1.0 - pr.alpha;
              const double t_before = T[p] / one_m;
              const double w = pr.alpha * t_before;
              double v_alpha = 0.0;
              for (int64_t d = 0; d < D; ++d) {
                const double gd = double(gr[i][y][x][d]);
                const double c = double(ca[i][g][d]);
                v_alpha += gd * (t_before * c - behind[p * D + d] / one_m);
                vc[i][g][d] += static_cast<scalar_t>(w * gd);
                behind[p * D + d] += w * c;
              }
              v_alpha += double(ga[i][y][x]) * tf[i * HW + p] / one_m;
              T[p] = t_before;
              if (double(op) * pr.falloff >= kMaxAlpha) continue;  // the 0.999 clamp has no gradient
              g_o += v_alpha * pr.falloff;
              const double v_sigma = -v_alpha * pr.alpha;
              const double dx = pr.dx, dy = pr.dy;
              g_q0 += v_sigma * 0.5 * dx * dx;
              g_q1 += v_sigma * dx * dy;
              g_q2 += v_sigma * 0.5 * dy * dy;
              g_m0 += v_sigma * (double(q[0]) * dx + double(q[1]) * dy);
              g_m1 += v_sigma * (double(q[1]) * dx + double(q[2]) * dy);
             }
            }
           }
          }
          vm[i][g][0] += static_cast<scalar_t>(g_m0);
          vm[i][g][1] += static_cast<scalar_t>(g_m1);
          vq[i][g][0] += static_cast<scalar_t>(g_q0);
          vq[i][g][1] += static_cast<scalar_t>(g_q1);
          vq[i][g][2] += static_cast<scalar_t>(g_q2);
          vo[i][g] += static_cast<scalar_t>(g_o);
        }
      }
    });
  });
  (void)N;
  return {v_m2, v_q, v_c, v_o, v_bg};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("composite_forward", &composite_forward, "lyra: front-to-back Gaussian compositing (CPU)");
  m.def("composite_backward", &composite_backward, "lyra: its backward (CPU)");
}
