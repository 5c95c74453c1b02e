#!/usr/bin/env bash
# The GPU checks, on a GPU machine without internet whose python3 holds PyTorch (torchvision, matplotlib,
# scikit-learn and pytest beside it), from a working tree that carries .device/ (`make device-pack` fills it
# where pip and the Debian dataset work: the wheels of pyro-ppl, pyro-api and lightning-fabric at the versions
# installed there, and Fashion-MNIST). In order, each under its own time limit so that one slow step leaves the
# others their time: the tests marked gpu, the training benchmark against the hand-written loop in and out of a
# CUDA graph (issue 26's targets), and AIS through the programs, the lowered log-joint and a CUDA graph. Each
# step's output goes to a log in $OUT (default runs/gpu-checks); device_speed.py (the GPU against 16 CPU
# threads) runs only with GPU_CHECKS_DEVICE_SPEED=1, as the four steps together fill about nine minutes.
#
#     bash benchmarks/gpu_checks.sh
set -uo pipefail
out=${OUT:-runs/gpu-checks}
mkdir -p "$out"
python=${PYTHON:-python3}
if [ ! -d .device/wheels ] || [ ! -d .device/data/fashion-mnist ]; then
    echo "no .device/: run 'make device-pack' where pip works, and carry .device to this machine" >&2
    exit 2
fi
$python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/ppvae-site \
    .device/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/ppvae-site:$PWD PPVAE_DATA=$PWD/.device/data PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, its output to $out/NAME.log
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most $seconds s): $*"
    local started=$SECONDS
    timeout "$seconds" "$@" >"$out/$name.log" 2>&1
    local status=$?
    tail -n 25 "$out/$name.log"
    echo "== $name: exit $status after $((SECONDS - started)) s"
}

step machine 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; \
    $python -c 'import torch, pyro, lightning_fabric; print(torch.__version__, pyro.__version__, lightning_fabric.__version__)'"
step gpu_tests 150 $python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
cd benchmarks
step train_speed 270 $python train_speed.py --accelerator cuda --rounds 10
step ais_speed 90 $python ais_speed.py --accelerator cuda --images 1000 --steps 20 --rounds 4
if [ "${GPU_CHECKS_DEVICE_SPEED:-0}" = 1 ]; then
    step device_speed 240 $python device_speed.py
fi
