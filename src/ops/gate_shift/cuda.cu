typedef long long i64;
typedef unsigned short bf16;
// GSM_HOST_EMULATION: scripts/cuda_kernels_host_check.py compiles this file as C++ and runs
// every thread in turn, lanes of a warp in order (resetting `emu_call` for each thread). A warp
// sum records each lane's value; the last lane, which runs after the others, is the leader and
// gets the sum. Every lane of a warp reaches the same warp sums in the same order, as
// `__shfl_down_sync` with a full mask requires on the GPU.
#ifdef GSM_HOST_EMULATION
#include <cstring>
inline float bits_to_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned float_to_bits(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static float emu_lanes[64][32];
static int emu_call;
__device__ __forceinline__ float warp_sum(float v) {
    int lane = threadIdx.x & 31, k = emu_call++;
    emu_lanes[k][lane] = v;
    if (lane != 31) return v;
    float s = 0.0f;
    for (int l = 0; l < 32; ++l) s += emu_lanes[k][l];
    return s;
}
__device__ __forceinline__ bool warp_leader() { return (threadIdx.x & 31) == 31; }
#else
__device__ __forceinline__ float bits_to_float(unsigned u) { return __uint_as_float(u); }
__device__ __forceinline__ unsigned float_to_bits(float f) { return __float_as_uint(f); }
__device__ __forceinline__ float warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffff, v, off);
    return v;
}
__device__ __forceinline__ bool warp_leader() { return (threadIdx.x & 31) == 0; }
#endif
// Loads and stores: float32 as is; bfloat16 widened to float, computed in float, rounded to
// nearest even on store.
__device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, i64 i) { return bits_to_float((unsigned)p[i] << 16); }
__device__ __forceinline__ void st(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, i64 i, float v) {
    unsigned u = float_to_bits(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) { p[i] = (bf16)((u >> 16) | 0x40u); return; }
    p[i] = (bf16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
__device__ __forceinline__ int interleaved(int c, int C) {
    int half = C / 2, quarter = C / 4, k = c / half, j = c % half;
    return k * half + (j % quarter) * 2 + j / quarter;
}

template <typename D>
__device__ void gate_conv_fwd(const D* r, const D* w, const D* bias, D* out, int B, int T, int C, int H, int W) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * 2 * T * H * W) return;
    int x = i % W; i64 q = i / W; int y = q % H; q /= H; int t = q % T; q /= T; int k = q % 2; int b = q / 2;
    int half = C / 2; i64 hw = (i64)H * W;
    float acc = ld(bias, k);
    for (int j = 0; j < half; ++j) {
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            i64 plane = (((i64)b * T + u) * C + k * half + j) * hw;
            i64 kw = ((i64)(k * half + j) * 3 + dt) * 9;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = y + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = x + dx - 1;
                    if (sx >= 0 && sx < W) acc += ld(w, kw + dy * 3 + dx) * ld(r, plane + (i64)sy * W + sx);
                }
            }
        }
    }
    st(out, i, acc);
}

template <typename D>
__device__ void gate_conv_bwd_input(const D* da, const D* w, D* dr, int B, int T, int C, int H, int W) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * H * W) return;
    int x = i % W; i64 q = i / W; int y = q % H; q /= H; int c = q % C; q /= C; int u = q % T; int b = q / T;
    int half = C / 2, k = c / half, j = c % half; i64 hw = (i64)H * W;
    float acc = 0.0f;
    for (int dt = 0; dt < 3; ++dt) {
        int t = u + 1 - dt;
        if (t < 0 || t >= T) continue;
        i64 plane = (((i64)b * 2 + k) * T + t) * hw;
        i64 kw = ((i64)(k * half + j) * 3 + dt) * 9;
        for (int dy = 0; dy < 3; ++dy) {
            int oy = y + 1 - dy;
            if (oy < 0 || oy >= H) continue;
            for (int dx = 0; dx < 3; ++dx) {
                int ox = x + 1 - dx;
                if (ox >= 0 && ox < W) acc += ld(w, kw + dy * 3 + dx) * ld(da, plane + (i64)oy * W + ox);
            }
        }
    }
    st(dr, i, acc);
}

// Grid (C, chunks): block (k·C/2 + j, chunk) sums its share of positions into 27 weight
// gradients (and, for j = 0, the bias gradient); warps reduce, then add atomically into the
// zero-initialised float32 dw / db.
template <typename D>
__device__ void gate_conv_bwd_weight(const D* r, const D* da, float* dw, float* db, int B, int T, int C, int H, int W) {
    int kj = blockIdx.x, half = C / 2, k = kj / half, j = kj % half;
    i64 hw = (i64)H * W, n = (i64)B * T * hw;
    float acc[28];
    for (int q = 0; q < 28; ++q) acc[q] = 0.0f;
    for (i64 p = (i64)blockIdx.y * blockDim.x + threadIdx.x; p < n; p += (i64)gridDim.y * blockDim.x) {
        int x = p % W; i64 q = p / W; int y = q % H; q /= H; int t = q % T; int b = q / T;
        float g = ld(da, (((i64)b * 2 + k) * T + t) * hw + (i64)y * W + x);
        acc[27] += g;
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            i64 plane = (((i64)b * T + u) * C + k * half + j) * hw;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = y + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = x + dx - 1;
                    if (sx >= 0 && sx < W) acc[dt * 9 + dy * 3 + dx] += g * ld(r, plane + (i64)sy * W + sx);
                }
            }
        }
    }
    for (int q = 0; q < 28; ++q) {
        float v = warp_sum(acc[q]);
        if (warp_leader()) {
            if (q < 27) atomicAdd(dw + (i64)kj * 27 + q, v);
            else if (j == 0) atomicAdd(db + k, v);
        }
    }
}

// The unit's BN in affine form and its activation, per channel: min(max(s·v + b, 0), mx).
template <typename D>
__device__ __forceinline__ float affine(const D* s, const D* b, int c, float v, float mx) {
    return fminf(fmaxf(v * ld(s, c) + ld(b, c), 0.0f), mx);
}

template <typename D>
__device__ void affine_act(const D* x, const D* s, const D* b, D* y, int B, int T, int C, int HW, float mx) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    st(y, i, affine(s, b, (int)((i / HW) % C), ld(x, i), mx));
}

// `ps` null: the plain shift; else the unit's BN + activation on each output channel.
template <typename D>
__device__ void shift_fwd(const D* x, const D* a, const D* ps, const D* pb, D* y, int B, int T, int C, int HW,
                          float mx) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    int p = i % HW; i64 q = i / HW; int c = q % C; q /= C; int t = q % T; int b = q / T;
    int k = c / (C / 2);
    float g = tanhf(ld(a, (((i64)b * 2 + k) * T + t) * HW + p));
    float xs = ld(x, i);
    float v = xs - g * xs;
    int tn = k == 0 ? t + 1 : t - 1;
    if (tn >= 0 && tn < T) {
        float gn = tanhf(ld(a, (((i64)b * 2 + k) * T + tn) * HW + p));
        v = gn * ld(x, (((i64)b * T + tn) * C + c) * HW + p) + v;
    }
    int oc = interleaved(c, C);
    if (ps) v = affine(ps, pb, oc, v, mx);
    st(y, (((i64)b * T + t) * C + oc) * HW + p, v);
}

// The GSM unit in inference on a channels-last map `x` (memory order B·T, H, W, C), in two
// passes. First the gates: tanh of the gate convolution on ReLU(s·x + sb) (GSM's BN3d in
// affine form and its ReLU, applied as `x` is read), float32 (B, 2, T, H, W). One warp per
// position: its lanes read 32 neighbouring channels at once (one coalesced load per tap),
// each keeps the sum of its channels of either half, and the warp adds them up.
template <typename D>
__device__ void unit_gates_nhwc(const D* x, const D* w, const D* bias, const D* s, const D* sb, float* g,
                                int B, int T, int C, int H, int W) {
    i64 pos = ((i64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x & 31;
    i64 hw = (i64)H * W;
    if (pos >= (i64)B * T * hw) return;
    int px = pos % W; i64 q = pos / W; int py = q % H; q /= H; int t = q % T; int b = q / T;
    int half = C / 2;
    float acc0 = 0.0f, acc1 = 0.0f;
    for (int c = lane; c < C; c += 32) {
        float sc = ld(s, c), sh = ld(sb, c), acc = 0.0f;
        for (int dt = 0; dt < 3; ++dt) {
            int u = t + dt - 1;
            if (u < 0 || u >= T) continue;
            for (int dy = 0; dy < 3; ++dy) {
                int sy = py + dy - 1;
                if (sy < 0 || sy >= H) continue;
                for (int dx = 0; dx < 3; ++dx) {
                    int sx = px + dx - 1;
                    if (sx < 0 || sx >= W) continue;
                    float r = fmaxf(ld(x, ((((i64)b * T + u) * H + sy) * W + sx) * C + c) * sc + sh, 0.0f);
                    acc += ld(w, (i64)c * 27 + dt * 9 + dy * 3 + dx) * r;
                }
            }
        }
        if (c < half) acc0 += acc; else acc1 += acc;
    }
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
    if (warp_leader()) {
        i64 p = (i64)py * W + px;
        g[(((i64)b * 2) * T + t) * hw + p] = tanhf(acc0 + ld(bias, 0));
        g[(((i64)b * 2 + 1) * T + t) * hw + p] = tanhf(acc1 + ld(bias, 1));
    }
}

// Then the shift by the gates `g`, the residual and the re-interleave, with the unit's BN (in
// affine form) and activation on each output channel, channels-last in and out. One thread
// per output value, channels fastest (coalesced stores); output channel `oc` of half k comes
// from input channel k·C/2 + (m mod 2)·C/4 + m/2, m = oc − k·C/2 (`interleaved` inverted).
template <typename D>
__device__ void unit_shift_nhwc(const D* x, const float* g, const D* ps, const D* pb, D* y, int B, int T, int C,
                                int HW, float mx) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * HW * C) return;
    int oc = i % C; i64 q = i / C; int p = q % HW; q /= HW; int t = q % T; int b = q / T;
    int half = C / 2, quarter = C / 4, k = oc / half, m = oc % half;
    int c = k * half + (m % 2) * quarter + m / 2;
    float gt = g[(((i64)b * 2 + k) * T + t) * HW + p];
    float xs = ld(x, i - oc + c);
    float v = xs - gt * xs;
    int tn = k == 0 ? t + 1 : t - 1;
    if (tn >= 0 && tn < T) {
        float gn = g[(((i64)b * 2 + k) * T + tn) * HW + p];
        v = gn * ld(x, (((i64)b * T + tn) * HW + p) * C + c) + v;
    }
    st(y, i, affine(ps, pb, oc, v, mx));
}

template <typename D>
__device__ void shift_bwd_input(const D* a, const D* dy, D* dx, int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * T * C * HW) return;
    int p = i % HW; i64 q = i / HW; int c = q % C; q /= C; int t = q % T; int b = q / T;
    int k = c / (C / 2), oc = interleaved(c, C);
    float g = tanhf(ld(a, (((i64)b * 2 + k) * T + t) * HW + p));
    float dz = ld(dy, (((i64)b * T + t) * C + oc) * HW + p);
    float v = dz - g * dz;
    int tp = k == 0 ? t - 1 : t + 1;
    if (tp >= 0 && tp < T) v = v + g * ld(dy, (((i64)b * T + tp) * C + oc) * HW + p);
    st(dx, i, v);
}

template <typename D>
__device__ void shift_bwd_gate(const D* x, const D* a, const D* dy, D* da, int B, int T, int C, int HW) {
    i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (i64)B * 2 * T * HW) return;
    int p = i % HW; i64 q = i / HW; int t = q % T; q /= T; int k = q % 2; int b = q / 2;
    int half = C / 2, tp = k == 0 ? t - 1 : t + 1;
    bool inside = tp >= 0 && tp < T;
    float acc = 0.0f;
    for (int j = 0; j < half; ++j) {
        int c = k * half + j, oc = interleaved(c, C);
        float xs = ld(x, (((i64)b * T + t) * C + c) * HW + p);
        float dz = ld(dy, (((i64)b * T + t) * C + oc) * HW + p);
        float dzs = inside ? ld(dy, (((i64)b * T + tp) * C + oc) * HW + p) : 0.0f;
        acc += xs * (dzs - dz);
    }
    float g = tanhf(ld(a, i));
    st(da, i, acc * (1.0f - g * g));
}

// Entry points, one per kernel and element type (suffix _f32 or _bf16).
#define GSM_ENTRY_POINTS(D, S)                                                                          \
extern "C" __global__ void gate_conv_fwd_##S(const D* r, const D* w, const D* b, D* o,                  \
                                             int B, int T, int C, int H, int W)                         \
    { gate_conv_fwd(r, w, b, o, B, T, C, H, W); }                                                       \
extern "C" __global__ void gate_conv_bwd_input_##S(const D* da, const D* w, D* dr,                      \
                                                   int B, int T, int C, int H, int W)                   \
    { gate_conv_bwd_input(da, w, dr, B, T, C, H, W); }                                                  \
extern "C" __global__ void gate_conv_bwd_weight_##S(const D* r, const D* da, float* dw, float* db,      \
                                                    int B, int T, int C, int H, int W)                  \
    { gate_conv_bwd_weight(r, da, dw, db, B, T, C, H, W); }                                             \
extern "C" __global__ void shift_fwd_##S(const D* x, const D* a, D* y, int B, int T, int C, int HW)     \
    { shift_fwd(x, a, (const D*)0, (const D*)0, y, B, T, C, HW, 0.0f); }                                \
extern "C" __global__ void affine_act_##S(const D* x, const D* s, const D* b, D* y,                      \
                                          int B, int T, int C, int HW, float mx)                        \
    { affine_act(x, s, b, y, B, T, C, HW, mx); }                                                        \
extern "C" __global__ void shift_fwd_affine_##S(const D* x, const D* a, const D* s, const D* b, D* y,    \
                                                int B, int T, int C, int HW, float mx)                  \
    { shift_fwd(x, a, s, b, y, B, T, C, HW, mx); }                                                      \
extern "C" __global__ void shift_bwd_input_##S(const D* a, const D* dy, D* dx,                          \
                                               int B, int T, int C, int HW)                             \
    { shift_bwd_input(a, dy, dx, B, T, C, HW); }                                                        \
extern "C" __global__ void shift_bwd_gate_##S(const D* x, const D* a, const D* dy, D* da,               \
                                              int B, int T, int C, int HW)                              \
    { shift_bwd_gate(x, a, dy, da, B, T, C, HW); }                                                      \
extern "C" __global__ void unit_gates_nhwc_##S(const D* x, const D* w, const D* b, const D* s,           \
                                               const D* sb, float* g, int B, int T, int C, int H, int W) \
    { unit_gates_nhwc(x, w, b, s, sb, g, B, T, C, H, W); }                                              \
extern "C" __global__ void unit_shift_nhwc_##S(const D* x, const float* g, const D* ps, const D* pb,     \
                                               D* y, int B, int T, int C, int HW, float mx)             \
    { unit_shift_nhwc(x, g, ps, pb, y, B, T, C, HW, mx); }
GSM_ENTRY_POINTS(float, f32)
GSM_ENTRY_POINTS(bf16, bf16)
