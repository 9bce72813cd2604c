// Fused CPU kernel of the SIFA operator (forward and backward), built on first use by
// sifa.ops.cpu with torch.utils.cpp_extension.
//
// For every query position the k*k deformed taps are sampled bilinearly from the next frame
// straight into a small per-thread buffer, scored against the query and aggregated, so nothing
// of size k*k x input is ever materialised (the reference's grid_sample does that). The key is
// read channels-last (B, H, W, C), so that a tap's C channels are contiguous; query, offset,
// output and gradients stay in the caller's (B, C, H, W) layout. Sampling follows the
// reference exactly: tap n = i*k + j of (y, x) reads (y + (i - (k-1)/2)*dilation + dy_n,
// x + (j - (k-1)/2)*dilation + dx_n) in pixels, each bilinear corner outside the image adds 0.
//
// Non-finite offsets propagate as through the reference's grid_sample on CPU: a tap whose
// coordinate is NaN or +-Inf, or so large that doubling it overflows (the reference's
// normalised grid overflows there), gets NaN bilinear weights in the reference, so its sample
// is NaN in every channel, and it reads and writes no key pixel; the rest follows by IEEE
// arithmetic. The backward forms the offset gradient as the reference does, so that a tap with
// no corner in the image gets sum_c 0 * dL/dv_c (0, or NaN where dL/dv is not finite) and an
// infinite query or key gives the reference's +-Inf.
//
// The backward is parallel over the batch: each item's key gradient is accumulated by one
// thread in a fixed order, so results are deterministic and no atomics are needed.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

// The four bilinear corners of one tap, in the order (y0, x0), (y0, x0+1), (y0+1, x0),
// (y0+1, x0+1): flat (y, x) index into H*W (-1 outside the image), their weights, and the
// tap's fractional position (fy, fx) between them.
template <typename T>
struct Corners {
  int64_t index[4];
  T weight[4];
  T fy, fx;
};

// Coordinates at least this far from 0 are far outside any image; below it, they convert to
// int64 exactly.
template <typename T>
constexpr T kFar = static_cast<T>(4503599627370496.0);  // 2^52

template <typename T>
inline void corners_at(T y, T x, int64_t H, int64_t W, Corners<T>& out) {
  const T y0f = std::floor(y), x0f = std::floor(x);
  const T fy = y - y0f, fx = x - x0f;
  const int64_t y0 = static_cast<int64_t>(y0f), x0 = static_cast<int64_t>(x0f);
  const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
  const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
  const T wy[4] = {1 - fy, 1 - fy, fy, fy};
  const T wx[4] = {1 - fx, fx, 1 - fx, fx};
  for (int c = 0; c < 4; ++c) {
    const bool inside = ys[c] >= 0 && ys[c] < H && xs[c] >= 0 && xs[c] < W;
    out.index[c] = inside ? ys[c] * W + xs[c] : -1;
    out.weight[c] = wy[c] * wx[c];
  }
  out.fy = fy;
  out.fx = fx;
}

struct Shape {
  int64_t B, C, H, W, K, dilation, G;
  double scale;
  bool softmax;
  int64_t taps() const { return K * K; }
  int64_t cg() const { return C / G; }
};

// Sample every tap of position (b, h, w) into vals (taps x C) and corners, then the per-group
// attention weights into attn (taps x G), normalised when asked.
template <typename T>
inline void attend(const Shape& s, const T* key_cl, const T* offset, const T* qv, int64_t b,
                   int64_t h, int64_t w, T* vals, Corners<T>* corners, T* attn) {
  const int64_t taps = s.taps(), C = s.C, HW = s.H * s.W, cg = s.cg();
  const double half = (s.K - 1) / 2.0;
  const T* key_b = key_cl + b * HW * C;
  const T* off_b = offset + b * 2 * taps * HW + h * s.W + w;
  for (int64_t n = 0; n < taps; ++n) {
    const T y = static_cast<T>(h + (n / s.K - half) * s.dilation) + off_b[(2 * n) * HW];
    const T x = static_cast<T>(w + (n % s.K - half) * s.dilation) + off_b[(2 * n + 1) * HW];
    Corners<T>& cn = corners[n];
    T* v = vals + n * C;
    if (std::abs(y) < kFar<T> && std::abs(x) < kFar<T>) {
      corners_at(y, x, s.H, s.W, cn);
      for (int64_t c = 0; c < C; ++c) v[c] = 0;
    } else {
      // Far outside, or not finite (NaN, +-Inf, or doubling overflows, where the reference's
      // (2x + 1) / W - 1 grid is not finite and its bilinear weights NaN): no corner; the
      // sample is 0, or NaN in every channel.
      for (int k = 0; k < 4; ++k) cn.index[k] = -1;
      cn.fy = cn.fx = 0;
      if (std::isfinite(y + y) && std::isfinite(x + x)) {
        for (int64_t c = 0; c < C; ++c) v[c] = 0;
      } else {
        for (int64_t c = 0; c < C; ++c) v[c] = std::numeric_limits<T>::quiet_NaN();
      }
    }
    for (int k = 0; k < 4; ++k) {
      if (cn.index[k] < 0) continue;
      const T* src = key_b + cn.index[k] * C;
      const T wt = cn.weight[k];
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) v[c] += wt * src[c];
    }
    for (int64_t g = 0; g < s.G; ++g) {
      T dot = 0;
      const T* vg = v + g * cg;
      const T* qg = qv + g * cg;
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < cg; ++c) dot += qg[c] * vg[c];
      attn[n * s.G + g] = static_cast<T>(s.scale) * dot;
    }
  }
  if (s.softmax) {
    for (int64_t g = 0; g < s.G; ++g) {
      T top = attn[g];
      for (int64_t n = 1; n < taps; ++n) top = std::max(top, attn[n * s.G + g]);
      T sum = 0;
      for (int64_t n = 0; n < taps; ++n) {
        T& a = attn[n * s.G + g];
        a = std::exp(a - top);
        sum += a;
      }
      for (int64_t n = 0; n < taps; ++n) attn[n * s.G + g] /= sum;
    }
  }
}

template <typename T>
inline void gather_channels(const T* src, int64_t C, int64_t HW, T* dst) {
  for (int64_t c = 0; c < C; ++c) dst[c] = src[c * HW];
}

template <typename T>
void forward_impl(const Shape& s, const T* query, const T* key_cl, const T* offset, T* out) {
  const int64_t taps = s.taps(), C = s.C, HW = s.H * s.W, cg = s.cg();
  at::parallel_for(0, s.B * s.H, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> vals(taps * C), qv(C), ov(C), attn(taps * s.G);
    std::vector<Corners<T>> corners(taps);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / s.H, h = bh % s.H;
      for (int64_t w = 0; w < s.W; ++w) {
        const int64_t at = b * C * HW + h * s.W + w;
        gather_channels(query + at, C, HW, qv.data());
        attend(s, key_cl, offset, qv.data(), b, h, w, vals.data(), corners.data(), attn.data());
        for (int64_t c = 0; c < C; ++c) ov[c] = 0;
        for (int64_t n = 0; n < taps; ++n) {
          const T* v = vals.data() + n * C;
          for (int64_t g = 0; g < s.G; ++g) {
            const T a = attn[n * s.G + g];
            T* og = ov.data() + g * cg;
            const T* vg = v + g * cg;
#pragma omp simd
            for (int64_t c = 0; c < cg; ++c) og[c] += a * vg[c];
          }
        }
        for (int64_t c = 0; c < C; ++c) out[at + c * HW] = ov[c];
      }
    }
  });
}

template <typename T>
void backward_impl(const Shape& s, const T* grad_out, const T* query, const T* key_cl,
                   const T* offset, T* grad_query, T* grad_key_cl, T* grad_offset) {
  const int64_t taps = s.taps(), C = s.C, HW = s.H * s.W, cg = s.cg(), G = s.G;
  const T scale = static_cast<T>(s.scale);
  at::parallel_for(0, s.B, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> vals(taps * C), qv(C), gv(C), go(C), gq(C), attn(taps * G), gl(taps * G);
    std::vector<T> zeros(C, T(0)), scratch(C);
    std::vector<Corners<T>> corners(taps);
    for (int64_t b = begin; b < end; ++b) {
      const T* key_b = key_cl + b * HW * C;
      T* grad_key_b = grad_key_cl + b * HW * C;
      for (int64_t h = 0; h < s.H; ++h) {
        for (int64_t w = 0; w < s.W; ++w) {
          const int64_t at = b * C * HW + h * s.W + w;
          gather_channels(query + at, C, HW, qv.data());
          gather_channels(grad_out + at, C, HW, go.data());
          attend(s, key_cl, offset, qv.data(), b, h, w, vals.data(), corners.data(),
                 attn.data());
          // dL/da_n = <g, v_n> per group; through the softmax when normalised; times scale.
          for (int64_t n = 0; n < taps; ++n) {
            for (int64_t g = 0; g < G; ++g) {
              T dot = 0;
              const T* vg = vals.data() + n * C + g * cg;
              const T* gg = go.data() + g * cg;
#pragma omp simd reduction(+ : dot)
              for (int64_t c = 0; c < cg; ++c) dot += gg[c] * vg[c];
              gl[n * G + g] = dot;
            }
          }
          if (s.softmax) {
            for (int64_t g = 0; g < G; ++g) {
              T mean = 0;
              for (int64_t n = 0; n < taps; ++n) mean += attn[n * G + g] * gl[n * G + g];
              for (int64_t n = 0; n < taps; ++n)
                gl[n * G + g] = attn[n * G + g] * (gl[n * G + g] - mean);
            }
          }
          for (int64_t i = 0; i < taps * G; ++i) gl[i] *= scale;

          for (int64_t c = 0; c < C; ++c) gq[c] = 0;
          T* off_grad = grad_offset + b * 2 * taps * HW + h * s.W + w;
          for (int64_t n = 0; n < taps; ++n) {
            const T* v = vals.data() + n * C;
            // dL/dq += dL/dz_n v_n;  dL/dv_n = a_n g + dL/dz_n q.
            for (int64_t g = 0; g < G; ++g) {
              const T a = attn[n * G + g], z = gl[n * G + g];
              const int64_t lo = g * cg;
#pragma omp simd
              for (int64_t c = lo; c < lo + cg; ++c) {
                gq[c] += z * v[c];
                gv[c] = a * go[c] + z * qv[c];
              }
            }
            // Into the key (bilinear weights) and the offsets. The offset gradient is
            // sum_c dL/dv_c * dv_c/dy with dv_c/dy formed from corner differences first, as
            // the reference's grid_sample does: an infinite key or dL/dv then gives the
            // reference's +-Inf, where summing each corner's dot product first gave Inf - Inf.
            // A corner outside the image reads zeros and writes into a scratch row.
            const Corners<T>& cn = corners[n];
            const T* src[4];
            T* dst[4];
            for (int k = 0; k < 4; ++k) {
              const bool inside = cn.index[k] >= 0;
              src[k] = inside ? key_b + cn.index[k] * C : zeros.data();
              dst[k] = inside ? grad_key_b + cn.index[k] * C : scratch.data();
            }
            const T fy = cn.fy, fx = cn.fx, gy = 1 - fy, gx = 1 - fx;
            const T w0 = cn.weight[0], w1 = cn.weight[1], w2 = cn.weight[2], w3 = cn.weight[3];
            T d_y = 0, d_x = 0;
#pragma omp simd reduction(+ : d_y, d_x)
            for (int64_t c = 0; c < C; ++c) {
              const T g = gv[c];
              const T nw = src[0][c], ne = src[1][c], sw = src[2][c], se = src[3][c];
              d_y += ((sw - nw) * gx + (se - ne) * fx) * g;
              d_x += ((ne - nw) * gy + (se - sw) * fy) * g;
              dst[0][c] += w0 * g;
              dst[1][c] += w1 * g;
              dst[2][c] += w2 * g;
              dst[3][c] += w3 * g;
            }
            off_grad[(2 * n) * HW] = d_y;
            off_grad[(2 * n + 1) * HW] = d_x;
          }
          for (int64_t c = 0; c < C; ++c) grad_query[at + c * HW] = gq[c];
        }
      }
    }
  });
}

Shape shape_of(const torch::Tensor& query, int64_t kernel_size, int64_t dilation, int64_t groups,
               double scale, bool softmax) {
  return Shape{query.size(0), query.size(1), query.size(2), query.size(3), kernel_size,
               dilation,      groups,        scale,         softmax};
}

void check(const torch::Tensor& query, const torch::Tensor& key_cl, const torch::Tensor& offset) {
  TORCH_CHECK(query.device().is_cpu(), "sifa cpu kernel: tensors must be on the CPU");
  TORCH_CHECK(query.is_contiguous() && key_cl.is_contiguous() && offset.is_contiguous(),
              "sifa cpu kernel: inputs must be contiguous");
  TORCH_CHECK(key_cl.scalar_type() == query.scalar_type() &&
                  offset.scalar_type() == query.scalar_type(),
              "sifa cpu kernel: one dtype for all inputs");
}

}  // namespace

// query (B, C, H, W), key_cl (B, H, W, C), offset (B, 2*k*k, H, W); returns (B, C, H, W).
torch::Tensor forward(torch::Tensor query, torch::Tensor key_cl, torch::Tensor offset,
                      int64_t kernel_size, int64_t dilation, int64_t groups, double scale,
                      bool softmax) {
  check(query, key_cl, offset);
  auto out = torch::empty_like(query);
  const Shape s = shape_of(query, kernel_size, dilation, groups, scale, softmax);
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "sifa_forward", [&] {
    forward_impl<scalar_t>(s, query.data_ptr<scalar_t>(), key_cl.data_ptr<scalar_t>(),
                           offset.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

// Returns grad_query (B, C, H, W), grad_key channels-last (B, H, W, C), grad_offset.
std::vector<torch::Tensor> backward(torch::Tensor grad_out, torch::Tensor query,
                                    torch::Tensor key_cl, torch::Tensor offset,
                                    int64_t kernel_size, int64_t dilation, int64_t groups,
                                    double scale, bool softmax) {
  check(query, key_cl, offset);
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.scalar_type() == query.scalar_type(),
              "sifa cpu kernel: grad_out must be contiguous, in the inputs' dtype");
  auto grad_query = torch::empty_like(query);
  auto grad_key_cl = torch::zeros_like(key_cl);
  auto grad_offset = torch::empty_like(offset);
  const Shape s = shape_of(query, kernel_size, dilation, groups, scale, softmax);
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "sifa_backward", [&] {
    backward_impl<scalar_t>(s, grad_out.data_ptr<scalar_t>(), query.data_ptr<scalar_t>(),
                            key_cl.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
                            grad_query.data_ptr<scalar_t>(), grad_key_cl.data_ptr<scalar_t>(),
                            grad_offset.data_ptr<scalar_t>());
  });
  return {grad_query, grad_key_cl, grad_offset};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "SIFA forward (CPU, fused)");
  m.def("backward", &backward, "SIFA backward (CPU, fused)");
}
