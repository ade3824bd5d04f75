#!/usr/bin/env bash
# Developer-only: compile Tailwind CSS (assets/app.css -> static/css/app.css).
# The compiled output is committed; running the Django app never needs Node.
# Usage: scripts/build-css.sh            (one-off minified build)
#        scripts/build-css.sh --watch    (extra args are passed to the Tailwind CLI)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v npm >/dev/null 2>&1; then
  echo "error: npm (Node.js >= 20) is required to rebuild the CSS" >&2
  exit 1
fi

if [ ! -d node_modules ]; then
  if [ -f package-lock.json ]; then
    npm ci
  else
    npm install
  fi
fi

npx @tailwindcss/cli -i assets/app.css -o static/css/app.css --minify "$@"
