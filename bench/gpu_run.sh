#!/usr/bin/env bash
# The large-label-space solves of bench/delicious_run.py on an accelerator, one JSON line
# each in $OUT/gpu.jsonl (logs beside it). Usage: OUT=dir bash bench/gpu_run.sh [CASES...]
# where a case is NAME:LOSS:INIT:SECONDS[:METHOD] (default: delicious and bibtex, three
# losses, method auto).
set -u
OUT=${OUT:-bench/gpu_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import jax, numpy; print('jax', jax.__version__, 'numpy', numpy.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(delicious:mse:random:100 delicious:bce:random:150 delicious:pal:random:180
                                  bibtex:pal:random:40 bibtex:bce:random:40 bibtex:mse:random:40)
for c in "${cases[@]}"; do
  IFS=: read -r name loss init secs method <<<"$c"
  method=${method:-auto}
  log="$OUT/$name-$loss-$init-$method.log"
  echo "== $name $loss $init $method (limit $secs s)"
  timeout "$secs" python3 bench/delicious_run.py "$loss" "$init" "$name" "$method" \
      2>"$log" | tee -a "$OUT/gpu.jsonl"
  echo "exit ${PIPESTATUS[0]}; last progress: $(tail -c 300 "$log" | tr '\r' '\n' | tail -2)"
done
