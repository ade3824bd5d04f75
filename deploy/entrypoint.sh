#!/usr/bin/env bash
# Entry point of the SafeFace images (deploy/Dockerfile.web and deploy/Dockerfile.gpu).
#
#   web           gunicorn with deploy/gunicorn.conf.py (the web image's default command)
#   worker        the default job cluster: light work, exports, the sweeper
#   gpu-worker    the "gpu" job cluster (generation, swap, voice) on one GPU of this host: each
#                 container claims a free GPU slot, so `--scale gpu-worker=N` spreads over N GPUs
#   migrate       database migrations, then the production settings check (one-shot)
#   fetch-models  embedded model files, plus the groups in SAFEFACE_FETCH_GROUPS, then a hash check
#   healthz       exit 0 when the local web server answers 200 on /healthz (container HEALTHCHECK)
#   anything else is run as given, e.g. `python manage.py createsuperuser`
set -euo pipefail
cd "$(dirname "$0")/.."

# GPU slots: one lock file per slot in the models folder, held (fd 9) for the life of the worker.
# Slot k runs on GPU k % (GPUs on this host); SAFEFACE_WORKERS_PER_GPU containers may share a GPU.
claim_gpu_slot() {
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    echo "gpu-worker: using CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES as set" >&2
    return 0
  fi
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "error: gpu-worker found no nvidia-smi: run it with a GPU reserved (NVIDIA Container Toolkit," \
      "compose deploy.resources.reservations.devices) or set CUDA_VISIBLE_DEVICES." >&2
    exit 1
  fi
  local gpus per slots dir slot
  gpus=$(nvidia-smi -L | grep -c '^GPU ' || true)
  if [ "$gpus" -lt 1 ]; then
    echo "error: gpu-worker: nvidia-smi lists no GPU in this container." >&2
    exit 1
  fi
  per="${SAFEFACE_WORKERS_PER_GPU:-1}"
  if ! [[ "$per" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: SAFEFACE_WORKERS_PER_GPU=$per is not a whole number of at least 1." >&2
    exit 1
  fi
  slots=$((gpus * per))
  dir="${SAFEFACE_MODELS_DIR:?SAFEFACE_MODELS_DIR must be set for gpu-worker}/.gpu-slots"
  mkdir -p "$dir"
  for ((slot = 0; slot < slots; slot++)); do
    exec 9>"$dir/slot-$slot.lock"
    if flock --nonblock 9; then
      export CUDA_DEVICE_ORDER=PCI_BUS_ID  # GPU numbers as nvidia-smi shows them
      export CUDA_VISIBLE_DEVICES=$((slot % gpus))
      echo "gpu-worker: slot $slot of $slots -> GPU $CUDA_VISIBLE_DEVICES" >&2
      return 0
    fi
    exec 9>&-
  done
  echo "error: gpu-worker: all $slots GPU slot(s) of this host are taken ($gpus GPU(s) x" \
    "SAFEFACE_WORKERS_PER_GPU=$per). Scale down, raise SAFEFACE_WORKERS_PER_GPU to share GPUs, or" \
    "raise Q_GPU_WORKERS for more processes per worker." >&2
  exit 1
}

command="${1:-web}"
case "$command" in
  web)
    # Several gunicorn workers: /metrics sums their HTTP metrics from this folder.
    export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/safeface-prometheus}"
    exec gunicorn --config deploy/gunicorn.conf.py safeface.wsgi:application
    ;;
  worker)
    unset Q_CLUSTER_NAME
    exec python manage.py qcluster
    ;;
  gpu-worker)
    shift || true
    claim_gpu_slot
    export Q_CLUSTER_NAME=gpu
    if [ "$#" -gt 0 ]; then exec "$@"; fi  # a different command on the claimed GPU
    exec python manage.py qcluster
    ;;
  migrate)
    python manage.py migrate --noinput
    exec python manage.py check --deploy
    ;;
  fetch-models)
    groups=()
    named="${SAFEFACE_FETCH_GROUPS:-}"
    for group in ${named//,/ }; do groups+=(--group "$group"); done
    if [ "${#groups[@]}" -gt 0 ]; then
      python -m engine models list "${groups[@]}" >/dev/null  # an unknown group stops here
    fi
    python -m engine models fetch
    if [ "${#groups[@]}" -gt 0 ]; then
      python -m engine models fetch "${groups[@]}"
      python -m engine models verify "${groups[@]}"
    fi
    exec python -m engine models verify
    ;;
  healthz)
    exec python - <<'PY'
import http.client, os, sys
# Ask as a client of the site would: a host it serves, and (behind the TLS proxy) https.
hosts = [h.strip().lstrip(".") for h in os.environ.get("ALLOWED_HOSTS", "").split(",")]
host = next((h for h in hosts if h and h != "*"), "localhost")
port = int(os.environ.get("SAFEFACE_PORT", "").strip() or 8000)
try:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/healthz", headers={"Host": host, "X-Forwarded-Proto": "https"})
    status = conn.getresponse().status
except OSError as exc:
    sys.exit(f"healthz: no answer on 127.0.0.1:{port}: {exc}")
if status != 200:
    sys.exit(f"healthz: /healthz answered {status}")
PY
    ;;
  *)
    exec "$@"
    ;;
esac
