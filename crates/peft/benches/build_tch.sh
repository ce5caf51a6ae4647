#!/usr/bin/env bash
# Builds examples/llama_step.rs on Burn's LibTorch backend (`--features tch`) against the torch
# installed in a Python environment, by hand (never in CI); docs/benchmarks.md has the numbers.
#
#   crates/peft/benches/build_tch.sh [PYTHON_ENV]        # default /tmp/venv
#   LD_LIBRARY_PATH=$PYTHON_ENV/lib/python3.*/site-packages/torch/lib \
#       /tmp/tch-target/release/examples/llama_step --model DIR --batch-file FILE --mode lora_qv
#
# burn-tch 0.21 builds tch 0.22, made for libtorch 2.9: with torch 2.9 installed,
# `LIBTORCH_USE_PYTORCH=1 cargo build --release -p peft --features tch` is all it takes. A newer
# torch (2.15 here) needs C++20 and has dropped six operations tch wraps (align_as,
# align_tensors, cholesky, cholesky_out, qr, qr_out) and changed one CUDA signature; this script
# builds against copies of torch-sys and burn-tch with those lines adapted, passed to cargo as
# patches for this build only (the repository and its lock file are left as they are).
set -euo pipefail
cd "$(dirname "$0")/../../.."
env_dir=${1:-/tmp/venv}
work=${WORK:-/tmp/tch-patched}
registry=$(ls -d "$HOME"/.cargo/registry/src/index.crates.io-*/ | head -1)
cargo fetch -q
rm -rf "$work" && mkdir -p "$work"
cp -r "$registry/torch-sys-0.22.0" "$work/torch-sys"
cp -r "$registry/burn-tch-0.21.0" "$work/burn-tch"
gen=$work/torch-sys/libtch/torch_api_generated.cpp
sed -i 's/self->align_as(\*other)/(throw std::runtime_error("align_as: not in this libtorch"), *self)/' "$gen"
sed -i 's/torch::align_tensors(of_carray_tensor(tensors_data, tensors_len))/(throw std::runtime_error("align_tensors: not in this libtorch"), std::vector<torch::Tensor>())/' "$gen"
sed -i 's/torch::cholesky(\*self, (bool)upper)/torch::linalg_cholesky(*self, (bool)upper)/; s/torch::cholesky_out(\*out, \*self, (bool)upper)/torch::linalg_cholesky_out(*out, *self, (bool)upper)/' "$gen"
sed -i 's/torch::qr(\*self, (bool)some)/torch::linalg_qr(*self, some ? "reduced" : "complete")/; s/torch::qr_out(\*Q, \*R, \*self, (bool)some)/torch::linalg_qr_out(*Q, *R, *self, some ? "reduced" : "complete")/' "$gen"
dummy=$work/burn-tch/src/cuda_hack/dummy_cuda_dependency.cpp
sed -i 's/getCurrentCUDABlasHandle();/getCurrentCUDABlasHandle(bool setup);/' "$dummy"
sed -i 's/    at::cuda::getCurrentCUDABlasHandle(bool setup);/    at::cuda::getCurrentCUDABlasHandle(true);/' "$dummy"
# g++ with C++20 wherever the build asks for C++17.
cat > "$work/cxx20" <<'WRAP'
#!/usr/bin/env bash
args=()
for a in "$@"; do [ "$a" = "-std=c++17" ] && a="-std=c++20"; args+=("$a"); done
exec "${REAL_CXX:-g++}" "${args[@]}"
WRAP
chmod +x "$work/cxx20"
# The patches rewrite Cargo.lock's sources for the two crates: put it back afterwards.
cp Cargo.lock "$work/Cargo.lock.orig"
trap 'cp "$work/Cargo.lock.orig" Cargo.lock' EXIT
CXX=$work/cxx20 CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/tch-target} LIBTORCH_USE_PYTORCH=1 LIBTORCH_BYPASS_VERSION_CHECK=1 \
  PATH="$env_dir/bin:$PATH" VIRTUAL_ENV="$env_dir" \
  cargo --config "patch.crates-io.torch-sys.path=\"$work/torch-sys\"" --config "patch.crates-io.burn-tch.path=\"$work/burn-tch\"" \
  build --release -p peft --features tch --example llama_step
