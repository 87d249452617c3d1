#!/usr/bin/env bash
# Installs ringway on a bare-metal or VM edge node (run as root):
#   binary      /usr/local/bin/ringway (and ringway-upstream, for smoke tests)
#   config      /etc/ringway/kong.yaml (kept if it exists; the documented example otherwise),
#               the directory owned by the ringway user so that POST /config can rewrite it
#   data        /var/lib/ringway (Admin API state), owned by the ringway user
#   service     /etc/systemd/system/ringway.service (systemctl reload = SIGHUP)
# Usage: scripts/install.sh [--no-build] [--prefix /usr/local]
set -euo pipefail
cd "$(dirname "$0")/.."

build=true
prefix=/usr/local
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=false ;;
    --prefix) prefix="$2"; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (it writes to $prefix/bin, /etc and /var/lib)" >&2
  exit 1
fi

if $build; then
  cargo build --release --locked --bins
fi

install -d -m 0755 "$prefix/bin"
install -m 0755 target/release/ringway "$prefix/bin/ringway"
install -m 0755 target/release/ringway-upstream "$prefix/bin/ringway-upstream"

if ! id ringway >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/ringway --shell /usr/sbin/nologin ringway
fi
install -d -m 0750 -o ringway -g ringway /var/lib/ringway
# POST /config rewrites the file atomically (a new file renamed over it, FILE.bak kept
# beside it): the service user owns the directory and the file. For a config that only
# deploys change, give both back to root; POST /config then answers 500.
install -d -m 0750 -o ringway -g ringway /etc/ringway
if [ ! -e /etc/ringway/kong.yaml ]; then
  install -m 0640 -o ringway -g ringway config/kong.example.yaml /etc/ringway/kong.yaml
  echo "installed the example config to /etc/ringway/kong.yaml: edit it, then start the service"
fi
"$prefix/bin/ringway" check -c /etc/ringway/kong.yaml || echo "warning: /etc/ringway/kong.yaml does not validate yet" >&2

if [ -d /etc/systemd/system ]; then
  sed "s#/usr/local/bin/ringway#$prefix/bin/ringway#g" scripts/ringway.service >/etc/systemd/system/ringway.service
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    echo "enable and start with: systemctl enable --now ringway"
  fi
fi
"$prefix/bin/ringway" version
