#!/usr/bin/env bash
# The GPU figures issue 18 still lacks, as seven device calls of under 600 s each (one H200; a session has 30
# device minutes). From the repository root, with the device tool, carrying the wheels:
#   run(command="bash bench/device_issue18.sh 1", carry=[".whl"])  # reward model, then PPO, each against TRL
#   run(command="bash bench/device_issue18.sh 2", carry=[".whl"])  # distillation against TRL; megatron agreement
#                                                                 # (its nodistopt variants check 21b8f37's fix)
#   run(command="bash bench/device_issue18.sh 3", carry=[".whl"])  # DPO against TRL, variable then equal lengths
#   run(command="bash bench/device_issue18.sh 4", carry=[".whl"])  # DPO equal lengths: a profile of our steps
#                                                                 # alone, then both at twice the micro-batch
#   run(command="bash bench/device_issue18.sh 5", carry=[".whl"])  # DPO against TRL, equal then variable
#                                                                 # lengths, after the changes call 4 suggested
#   run(command="bash bench/device_issue18.sh 6", carry=[".whl"])  # DPO equal lengths against TRL with a profile
#                                                                 # timeline (GPU idle by host work), then ours
#                                                                 # compiled per decoder layer
#   run(command="bash bench/device_issue18.sh 7", carry=[".whl"])  # DPO equal lengths against TRL at the
#                                                                 # defaults, then ours compiled per layer
# Since 7cc8c25 our DPO run compiles the decoder stack as one graph by default (~150 s for the first run of a
# machine, ~40 s per layer): calls 3-5 were written for per-layer compilation (add --compile_scope layers there).
# Each bench bounds its own phases (--timeouts); the outer timeouts keep one call under the device's limit and
# let the next bench of the call run when one overruns. JSON and logs land in $OUT. The commands are the ones in
# each bench's docstring; copy the figures there ("Measured: ...") with this script's call line. On another
# kind than nvidia-h200, say which, so that the JSON names the card:
#   run(command="DEVICE_KIND=nvidia-h100-x1 bash bench/device_issue18.sh 3", kind="nvidia-h100-x1", carry=[".whl"])
set -uo pipefail
: "${OUT:?run on the device machine, where the device tool sets OUT}"
call=${1:?which call: 1 to 7}
kind=${DEVICE_KIND:-nvidia-h200}  # the device tool's kind this call got, recorded in each JSON

install() {  # --target: the machine's own torch and transformers stay; no index: nothing to download there
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" $1
}
bench() {  # seconds, script, arguments...: one bench, its exit status reported, never ending the call
    local limit=$1 script=$2
    shift 2
    echo "== $script $* (at most ${limit} s, $(date -u +%T))"
    timeout "$limit" python3 "bench/$script" "$@"
    echo "== $script: exit $? ($(date -u +%T))"
}

dpo_against_trl() {  # equal|variable, seconds, --timeouts: our DPO and TRL's on pairs of those lengths
    local name=dpo_${1/variable/var}
    bench "$2" dpo_step.py --lengths "$1" --out "$OUT/$name.json" --logs_dir "$OUT/${name}_logs" \
        --device_kind "$kind" --timeouts "$3"
}

case "$call" in 1 | 2 | 3 | 4 | 5 | 6 | 7) ;; *) echo "error: call must be 1 to 7, not $call" >&2; exit 2 ;; esac
install ".whl/*.whl" /tmp/site || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
# the carried wheels need the machine's pyarrow, pandas and xxhash: say at once if an import fails
python3 -c "import datasets, trl, megatron.core as m; print('datasets', datasets.__version__, 'trl', trl.__version__, 'megatron-core', m.__version__)" || exit 1
case "$call" in
    1)
        bench 280 rm_step.py --out "$OUT/rm_step.json" --logs_dir "$OUT/rm_logs" --device_kind "$kind" \
            --lengths variable
        install ".whl/ppo/*.whl" /tmp/trl112 || exit 1
        bench 290 ppo_step.py --trl_path /tmp/trl112 --out "$OUT/ppo_step.json" --logs_dir "$OUT/ppo_logs" \
            --device_kind "$kind"
        ;;
    2)
        bench 320 distill_step.py --out "$OUT/distill_step.json" --logs_dir "$OUT/distill_logs" \
            --device_kind "$kind"
        bench 250 megatron_agreement.py --out "$OUT/megatron_agreement.json" --workdir /tmp/agree
        ;;
    3)
        dpo_against_trl variable 280 110,150,20
        dpo_against_trl equal 290 100,120,0
        ;;
    4)
        bench 260 dpo_step.py --skip_trl --profile --out "$OUT/dpo_profile.json" --logs_dir "$OUT/dpo_profile_logs" \
            --device_kind "$kind" --timeouts 100,0,150
        bench 300 dpo_step.py --pack_rows 32 --trl_micro_batch 16 --out "$OUT/dpo_equal_mb32.json" \
            --logs_dir "$OUT/dpo_equal_mb32_logs" --device_kind "$kind" --timeouts 100,150,0
        ;;
    5)
        dpo_against_trl equal 270 100,150,0
        dpo_against_trl variable 290 110,150,0
        ;;
    6)
        bench 440 dpo_step.py --profile --out "$OUT/dpo_equal.json" --logs_dir "$OUT/dpo_equal_logs" \
            --device_kind "$kind" --timeouts 170,100,150
        bench 130 dpo_step.py --compile_scope layers --skip_trl --out "$OUT/dpo_layers.json" \
            --logs_dir "$OUT/dpo_layers_logs" --device_kind "$kind" --timeouts 100,0,0
        ;;
    7)  # in order of what matters most: the last is cut when the device time left runs short
        dpo_against_trl equal 290 170,100,0
        bench 100 dpo_step.py --compile_scope layers --skip_trl --out "$OUT/dpo_layers.json" \
            --logs_dir "$OUT/dpo_layers_logs" --device_kind "$kind" --timeouts 90,0,0
        ;;
esac
