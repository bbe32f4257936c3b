#!/usr/bin/env bash
# The GPU checks of the speed work in one run, for a session lent a CUDA machine (device time is short:
# about 10 minutes on an H200 for all of it). Fashion-MNIST must travel with the working tree, since the
# machine has no Debian data package and no internet, and its Python lacks Hydra. Here, before the run:
#   mkdir -p data/FashionMNIST/raw && cp /usr/share/datasets/fashion-mnist/*.gz data/FashionMNIST/raw/
#   echo /.whl/ >> .git/info/exclude
#   pip wheel --no-deps -w .whl hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3
# then run this script with `data` and `.whl` in the device tool's carry list:
#   bash benchmarks/gpu_checks.sh            # results in $OUT (or ./gpu_checks_out), one file per check
set -uo pipefail
export PYTHONUNBUFFERED=1
out="${OUT:-gpu_checks_out}"
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

# 1. No host sync in a training step (raises at the first one, naming the line).
python3 benchmarks/speed.py --device cuda --sync-check default_b64 --variants framework on_device --steps 160 \
    2>&1 | tee "$out/sync_check.txt"
python3 benchmarks/speed.py --device cuda --sync-check default_b64 --variants on_device --replay --steps 160 \
    2>&1 | tee "$out/sync_check_replay.txt"
# 2. Overhead against a plain loop, and on_device + compile against today's framework.
python3 benchmarks/speed.py --device cuda --recipes default_b64 default_b256 \
    --variants framework on_device on_device_compile --steps 400 --rounds 5 2>&1 | tee "$out/speed_dcgan.txt"
# 3. What a host read per step costs: the per-step callbacks reading every step instead of every 50.
python3 benchmarks/speed.py --device cuda --recipes default_b64 --variants framework on_device --read-every 1 \
    --steps 400 --rounds 5 2>&1 | tee "$out/speed_read_every_1.txt"
# 4. StyleGAN2 at 64x64.
python3 benchmarks/speed.py --device cuda --recipes stylegan2_64 --variants framework on_device on_device_compile \
    --steps 120 --rounds 3 2>&1 | tee "$out/speed_stylegan2.txt"
