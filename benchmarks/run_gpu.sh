#!/usr/bin/env bash
# Every benchmark on a lent GPU in one call (prints JSON lines; paste them into RESULTS.md with the card and date):
#   bash benchmarks/run_gpu.sh            # from the repository root, with the package installed (".[bench]")
set -euo pipefail
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python sweep_speedup.py --ks 1,4,16,64 --steps 200 --strategies separate,vmap,loop
python train_throughput.py --batch-size 512 --steps 60 --bf16
python train_throughput.py --batch-size 512 --steps 30
python per_example_grads.py --batch-sizes 128,256 --steps 30 --chunk-size 0
python step_dispatch.py
if python -c "import torch" 2>/dev/null; then python ../../shared/peers/torch_peer.py; fi
