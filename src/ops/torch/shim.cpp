// libtorch's backward functions for convolution and batch norm, which the `tch` crate does not
// bind (their `bool[3]` output masks are outside its generator): `torch_autograd.rs` calls
// them directly instead of recording and replaying libtorch autograd graphs. Compiled by
// build.rs against the headers of the libtorch that torch-sys links (`--features tch` only).
//
// Tensors cross as `torch::Tensor *` (tch's `C_tensor`); results are new heap tensors that the
// Rust side takes ownership of (`tch::Tensor::from_ptr`), null where the mask did not ask for
// one. Each function returns null, or an error message the caller frees with `gs_free`.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <tuple>

namespace {

char* error_message(const char* what) {
  return strdup(what);
}

at::Tensor* boxed(const at::Tensor& t, bool wanted) {
  return wanted && t.defined() ? new at::Tensor(t) : nullptr;
}

// The three gradients of a backward, those the mask asked for, into `out`.
void box_grads(const std::tuple<at::Tensor, at::Tensor, at::Tensor>& grads, const std::array<bool, 3>& mask,
               at::Tensor** out) {
  out[0] = boxed(std::get<0>(grads), mask[0]);
  out[1] = boxed(std::get<1>(grads), mask[1]);
  out[2] = boxed(std::get<2>(grads), mask[2]);
}

std::optional<at::Tensor> optional(const at::Tensor* t) {
  if (t == nullptr) return std::nullopt;
  return *t;
}

}  // namespace

extern "C" {

void gs_free(char* message) {
  free(message);
}

// dx, dw, db of `y = conv2d(x, w, b)` for output gradient `dy`; `mask` says which are wanted.
char* gs_convolution_backward(const at::Tensor* dy, const at::Tensor* x, const at::Tensor* w, int has_bias,
                              const int64_t* stride, const int64_t* padding, const int64_t* dilation,
                              int64_t groups, const int* mask, at::Tensor** out) {
  try {
    std::array<bool, 3> output_mask = {mask[0] != 0, mask[1] != 0, mask[2] != 0 && has_bias != 0};
    std::vector<int64_t> bias_sizes = {w->size(0)};
    at::OptionalIntArrayRef bias = has_bias ? at::OptionalIntArrayRef(bias_sizes) : std::nullopt;
    auto grads = at::convolution_backward(*dy, *x, *w, bias, at::IntArrayRef(stride, 2),
                                          at::IntArrayRef(padding, 2), at::IntArrayRef(dilation, 2),
                                          false, {0, 0}, groups, output_mask);
    box_grads(grads, output_mask, out);
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e.what());
  }
}

// y, save_mean, save_invstd of a batch norm: batch statistics when `train` (and the running
// statistics updated in place with `momentum`, PyTorch's rule), else the running ones.
char* gs_batch_norm_forward(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b,
                            const at::Tensor* running_mean, const at::Tensor* running_var, int train,
                            double momentum, double eps, at::Tensor** out) {
  try {
    auto result = at::native_batch_norm(*x, optional(w), optional(b), optional(running_mean),
                                        optional(running_var), train != 0, momentum, eps);
    out[0] = new at::Tensor(std::get<0>(result));
    out[1] = new at::Tensor(std::get<1>(result));
    out[2] = new at::Tensor(std::get<2>(result));
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e.what());
  }
}

// dx, dw, db of that batch norm for output gradient `dy`, from what its forward saved.
char* gs_batch_norm_backward(const at::Tensor* dy, const at::Tensor* x, const at::Tensor* w,
                             const at::Tensor* running_mean, const at::Tensor* running_var,
                             const at::Tensor* save_mean, const at::Tensor* save_invstd, int train,
                             double eps, const int* mask, at::Tensor** out) {
  try {
    std::array<bool, 3> output_mask = {mask[0] != 0, mask[1] != 0, mask[2] != 0};
    auto grads = at::native_batch_norm_backward(*dy, *x, optional(w), optional(running_mean),
                                                optional(running_var), optional(save_mean),
                                                optional(save_invstd), train != 0, eps, output_mask);
    box_grads(grads, output_mask, out);
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e.what());
  }
}

// relu(conv2d(x, w) + b) for inference (no backward). On CUDA tensors one cuDNN call with the
// bias and the ReLU fused into the convolution's epilogue (`at::cudnn_convolution_relu`, what
// PyTorch's frozen-graph conv + ReLU fusion runs), so the ReLU is not a separate pass over the
// output; elsewhere the convolution, then an in-place ReLU. cuDNN may find no fused engine for
// a shape: the caller then falls back to the two ops.
char* gs_conv2d_bias_relu(const at::Tensor* x, const at::Tensor* w, const at::Tensor* b, const int64_t* stride,
                          const int64_t* padding, const int64_t* dilation, int64_t groups, at::Tensor** out) {
  try {
    at::IntArrayRef s(stride, 2), p(padding, 2), d(dilation, 2);
    if (x->is_cuda()) {
      out[0] = new at::Tensor(at::cudnn_convolution_relu(*x, *w, *b, s, p, d, groups));
    } else {
      out[0] = new at::Tensor(at::conv2d(*x, *w, *b, s, p, d, groups).relu_());
    }
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e.what());
  }
}

// Runs `body(ctx, begin, end)` over [0, n) on libtorch's intra-op thread pool (OpenMP in the
// PyPI builds), so that gateshift's CPU kernels between libtorch ops use the threads libtorch
// keeps spinning instead of competing with them. `body` must not throw (the Rust side catches
// its panics); returns null or an error message.
char* gs_parallel_for(int64_t n, void (*body)(void*, int64_t, int64_t), void* ctx) {
  try {
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) { body(ctx, begin, end); });
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e.what());
  }
}

}  // extern "C"
