#!/usr/bin/env bash
# The GPU checks, on a GPU machine without internet whose python3 holds PyTorch (torchvision, matplotlib,
# scikit-learn and pytest beside it), from a working tree that carries .device/ (`make device-pack` fills it
# where pip and the Debian dataset work: the wheels of pyro-ppl, pyro-api and lightning-fabric at the versions
# installed there, and Fashion-MNIST). In order, each under its own time limit so that one slow step leaves the
# others their time: the tests marked gpu, the training benchmark against the hand-written loop in and out of a
# CUDA graph (issue 26's targets), and AIS through the programs, the lowered log-joint and a CUDA graph. Each
# step's output goes to a log in $OUT (default runs/gpu-checks). Those steps together fill about nine minutes.
# GPU_CHECKS names the steps to run instead (of "tests train ais device richer"): "device" is device_speed.py
# (the GPU against 16 CPU threads); "richer" adds RICHER_ROWS to issue 24's full-scale table in runs/richer-full
# (`make bench-richer-gpu`'s settings; carry that folder there and back to build the table over several turns),
# under RICHER_SECONDS (default 540), and copies its table, results and samples to $OUT.
#
#     bash benchmarks/gpu_checks.sh
#     GPU_CHECKS=richer RICHER_ROWS="default iwae-5" bash benchmarks/gpu_checks.sh
set -uo pipefail
mkdir -p "${OUT:-runs/gpu-checks}"
out=$(cd "${OUT:-runs/gpu-checks}" && pwd)  # absolute: the benchmarks run from their own folder
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

checks=" ${GPU_CHECKS:-tests train ais} "
step machine 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; \
    $python -c 'import torch, pyro, lightning_fabric; print(torch.__version__, pyro.__version__, lightning_fabric.__version__)'"
[[ $checks == *" tests "* ]] && step gpu_tests 150 $python -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
cd benchmarks
[[ $checks == *" train "* ]] && step train_speed 240 $python train_speed.py --accelerator cuda --rounds 10
[[ $checks == *" ais "* ]] && step ais_speed 120 $python ais_speed.py --accelerator cuda --images 1000 --steps 20 --rounds 4
[[ $checks == *" device "* ]] && step device_speed 240 $python device_speed.py
if [[ $checks == *" richer "* ]]; then
    # shellcheck disable=SC2086  # RICHER_ROWS is a list of row names
    step richer_models "${RICHER_SECONDS:-540}" $python richer_models.py --accelerator cuda --epochs 20 \
        --ais-images 10000 --ais-steps 200 --bdmc-images 100 --out ../runs/richer-full --rows ${RICHER_ROWS:?set RICHER_ROWS to the rows to add, as in RICHER_ROWS=\"default iwae-5\"}
    cp ../runs/richer-full/{table.md,results.json,samples.pt,samples.png} "$out/" 2>/dev/null  # samples.pt: kept rows need it
fi
exit 0
