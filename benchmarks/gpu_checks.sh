#!/usr/bin/env bash
# The CUDA checks of BENCHMARKS.md ("still to run on a GPU"), one script: run from the repository root with OUT set — GPU tests, the step with fp32/bf16/int8 state, memory, the p = 1/4 members.
# (logs and JSON under $OUT; about 4 minutes on an H200).
: "${OUT:?set OUT to a folder for the logs and JSON}"
export PYTHONPATH=src:. PYTHONUNBUFFERED=1
L=$OUT/log.txt
{ echo "== env"; date; nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv; uptime; git rev-parse --short HEAD 2>/dev/null; python3 -c "import torch;print(torch.__version__, torch.version.cuda)"; } >> $L 2>&1
echo "== gpu tests" >> $L
timeout 150 python3 -m pytest -q -m gpu tests -p no:cacheprovider -rfE >> $L 2>&1; echo "rc=$?" >> $L
echo "== bench step 124m" >> $L
timeout 80 python3 -m muonlab bench step --device cuda --rows muonlab_default,muonlab_no_telemetry,muonlab_bf16_state,muonlab_int8_state,torch_muon_fp32,torch_muon_bf16 --out $OUT/step_124m.json >> $L 2>&1; echo "rc=$?" >> $L
echo "== bench memory 124m" >> $L
timeout 40 python3 -m muonlab bench memory --device cuda --out $OUT/memory_124m.json >> $L 2>&1; echo "rc=$?" >> $L
echo "== gpu_step_profile (6 blocks, CUDA events)" >> $L
timeout 60 python3 benchmarks/memory/gpu_step_profile.py --rounds 15 >> $L 2>&1; echo "rc=$?" >> $L
echo "== bench family msgdq/adamq" >> $L
timeout 60 python3 -m muonlab bench family --device cuda --quick --optimizers muon,msgdq,adamq --out $OUT/family_quarter.json >> $L 2>&1; echo "rc=$?" >> $L
echo "== bench polar zolo f64 / f32" >> $L
timeout 70 python3 -m muonlab bench polar --device cuda --methods qdwh,zolo_pd,svd --dtype float64 --kappas 10,1e4,1e8,1e12 --shapes 768x768,768x3072,3072x768 --repeats 5 --out $OUT/polar_zolo_f64_cuda.json >> $L 2>&1; echo "rc=$?" >> $L
timeout 60 python3 -m muonlab bench polar --device cuda --methods qdwh,zolo_pd,svd --dtype float32 --kappas 10,1e4,1e6 --shapes 768x768,768x3072,3072x768 --repeats 5 --out $OUT/polar_zolo_f32_cuda.json >> $L 2>&1; echo "rc=$?" >> $L
echo "== done" >> $L; date >> $L
