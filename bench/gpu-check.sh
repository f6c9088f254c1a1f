#!/usr/bin/env bash
# The GPU device check (issue #29): on a machine with one NVIDIA GPU and no network, from the
# repository root, with a vab built elsewhere with `--features wgpu` and the CIFAR-10 archive at
# ../shared/data/cifar10-jpg.tar.xz. Prints the GPU and driver, the ResNet-18 training step, the
# per-batch time of each V&B stage, then times a V&B run with the paper's settings
# (configs/paper-cifar10.toml) on SUBSET images for one epoch of each stage and projects the full
# 200-epoch schedule on all 50,000 (epoch time grows linearly with the images). Finishes within
# 8 minutes: the steps' time limits add up to 465 s.
#
# The binary: target/release/vab, or target/release/vab.xz (86 MiB stripped, 14 MiB compressed;
# make it with `cargo build --release -p vab-cli --features wgpu && strip target/release/vab &&
# xz -k target/release/vab`). Environment: BACKEND (default wgpu; cuda for a `--features cuda`
# build), SUBSET (training images of the timed run, default 20000).
set -uo pipefail
backend="${BACKEND:-wgpu}"
subset="${SUBSET:-20000}"
archive=../shared/data/cifar10-jpg.tar.xz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export VAB_CACHE_DIR="$work/cache" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$work}"

vab=target/release/vab
if [ ! -x "$vab" ] && [ -f "$vab.xz" ]; then
  xz -dc "$vab.xz" > "$work/vab" && chmod +x "$work/vab" && vab="$work/vab"
fi
[ -x "$vab" ] || { echo "no target/release/vab or target/release/vab.xz: build it with --features $backend"; exit 1; }
[ -f "$archive" ] || { echo "no $archive"; exit 1; }

echo "== machine"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
lscpu | grep -m1 "Model name" || true
echo "Vulkan drivers (ICD files):" $(ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | grep json || echo none)
if [ "$backend" = wgpu ] && ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  echo "no NVIDIA Vulkan driver (nvidia_icd.json): wgpu can reach the GPU only through Vulkan, i.e. the driver's libGLX_nvidia/Vulkan part"
fi
ls /usr/lib/x86_64-linux-gnu/libvulkan.so.1 >/dev/null 2>&1 || echo "no Vulkan loader (libvulkan.so.1)"

echo "== ResNet-18 training step, batch 128 ($backend)"
timeout 60 "$vab" bench step --backend "$backend" --model resnet18 --batch 128 --infer-batch 256 --warmup 3 --steps 10 || echo "bench step failed or timed out"

echo "== V&B stages per batch (configs/paper-cifar10.toml, $backend)"
for stage in victim refresh stage2 stage3; do
  timeout 40 "$vab" bench step --backend "$backend" --stage "$stage" --warmup 2 --steps 5 --json > "$work/$stage.json" 2>"$work/$stage.err" \
    && cat "$work/$stage.json" || { echo "$stage failed or timed out:"; tail -3 "$work/$stage.err"; }
done

echo "== data: CIFAR-10, BadNets at rate 0.1"
start=$(date +%s)
timeout 45 "$vab" poison --data "$archive" --attack badnets --rate 0.1 --target 0 --seed 1 -o "$work/badnets.safetensors" | tail -2 \
  || { echo "poisoning failed or timed out"; exit 1; }
echo "decoded and poisoned in $(( $(date +%s) - start )) s"

echo "== V&B, the paper's settings on $subset images: warm-up, one stage-2 and one stage-3 epoch"
sed -e 's/^epochs = .*/epochs = 2/' -e 's/^stage2_epochs = .*/stage2_epochs = 1\nrefresh_every = 1/' \
  -e "s/^\[data\]/[data]\ntrain_subset = $subset/" configs/paper-cifar10.toml > "$work/short.toml"
start=$(date +%s)
timeout 200 "$vab" train --backend "$backend" --bundle "$work/badnets.safetensors" --defense vab --config "$work/short.toml" --out "$work/run" 2>&1 | tail -3
echo "wall $(( $(date +%s) - start )) s (with start-up and kernel compilation)"
summary="$work/run/summary.json"
if [ -f "$summary" ]; then
  stages=$(tr -d ' \n' < "$summary" | grep -o '"stages":\[[^]]*\]')
  wall() { echo "$stages" | grep -o "\"stage\":\"$1\",\"wall_s\":[0-9.e+-]*" | sed 's/.*://'; }
  w=$(wall warm_up); c=$(wall clean); s=$(wall suppression)
  echo "stage wall times: warm-up ${w} s (Victim epoch 0 + 2 warm-up epochs + 3 refreshes), stage 2 ${c} s, stage 3 ${s} s (one epoch each, with a Victim epoch and refresh)"
  awk -v w="$w" -v c="$c" -v s="$s" -v n="$subset" 'BEGIN {
    scale = 50000 / n; total = (w + 100 * c + 100 * s) * scale
    printf "projected full paper run (50,000 images, 200 epochs): %.2f h\n", total / 3600
    printf "  (an upper bound: the timed epochs refresh the split every epoch, the paper every 5th)\n" }'
  echo "final figures (one epoch per stage, not the paper's): $(tr -d ' \n' < "$summary" | grep -o '"ba":[0-9.]*\|"asr":[0-9.]*' | head -2 | tr '\n' ' ')"
else
  echo "the timed run did not finish within its limit; use the per-batch figures above"
fi
