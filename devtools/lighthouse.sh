#!/usr/bin/env bash
# Lighthouse (npm lighthouse@12.2.3, Debian chromium) on a customer page: `devtools/lighthouse.sh URL`.
set -euo pipefail
url=${1:?usage: devtools/lighthouse.sh URL}
dir=${LIGHTHOUSE_DIR:-/tmp/cardbridge-lighthouse}
mkdir -p "$dir"
[ -x "$dir/node_modules/.bin/lighthouse" ] || npm install --prefix "$dir" --silent lighthouse@12.2.3
CHROME_PATH=/usr/bin/chromium "$dir/node_modules/.bin/lighthouse" "$url" --quiet \
  --chrome-flags="--headless --no-sandbox --disable-gpu --disable-background-networking" \
  --only-categories=performance,accessibility,best-practices --output=json --output-path="$dir/report.json"
python3 - "$dir/report.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for name, cat in report["categories"].items():
    print(f"{name:16} {cat['score']:.2f}")
PY
