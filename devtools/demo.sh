#!/usr/bin/env bash
# make demo: localstripe + the app on SQLite, demo customers, two links; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
STRIPE_PORT=${STRIPE_PORT:-8420}
APP_PORT=${APP_PORT:-5000}
export CARDBRIDGE_DEMO=1 FLASK_APP=app:create_app CARD_FORM=${CARD_FORM:-card_element}
export STRIPE_API_BASE="http://127.0.0.1:${STRIPE_PORT}"
export STRIPE_JS_URL="http://127.0.0.1:${STRIPE_PORT}/js.stripe.com/v3/"
export PUBLIC_BASE_URL=${PUBLIC_BASE_URL:-"http://127.0.0.1:${APP_PORT}"}
export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-whsec_cardbridge_demo}
mkdir -p instance
# localstripe starts from scratch, so the demo database does too (its cus_… ids would dangle).
export DATABASE_URL="sqlite:///$(pwd)/instance/demo.db"
rm -f instance/demo.db instance/demo.db-wal instance/demo.db-shm
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; echo; echo "demo stopped"; }
trap cleanup EXIT INT TERM

$BIN/python -m devtools.localstripe_server --port "$STRIPE_PORT" --from-scratch >instance/localstripe.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:${STRIPE_PORT}/js.stripe.com/v3/" >/dev/null 2>&1 && break; sleep 0.2
done
$BIN/flask db upgrade >instance/demo-migrate.log 2>&1 || { cat instance/demo-migrate.log; exit 1; }
echo "== cardbridge demo =="
$BIN/flask demo
echo "localstripe (fake Stripe): http://127.0.0.1:${STRIPE_PORT}   test card 4242 4242 4242 4242, any future date, any CVC"
echo "app: ${PUBLIC_BASE_URL}   health: ${PUBLIC_BASE_URL}/healthz   (Ctrl-C stops both)"
$BIN/gunicorn --bind "127.0.0.1:${APP_PORT}" --workers 2 --threads 4 'app:create_app()' &
pids+=($!)
wait "${pids[-1]}"
