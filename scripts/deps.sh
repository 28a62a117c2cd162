#!/bin/sh
# Checks the Debian -dev packages pwb builds against; with --install (as root) installs missing ones.
set -u
mode=${1:---check}
# pkg-config name -> Debian package
pairs="sqlite3:libsqlite3-dev libcurl:libcurl4-openssl-dev libcjson:libcjson-dev libpcre2-8:libpcre2-dev libcrypto:libssl-dev libutf8proc:libutf8proc-dev libmicrohttpd:libmicrohttpd-dev criterion:libcriterion-dev"
missing=""
command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"
for p in $pairs; do
  pc=${p%%:*}; deb=${p#*:}
  if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists "$pc"; then
    missing="$missing $deb"
  fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && { [ "$mode" = "--install" ] || [ "${PWB_AUTO_INSTALL:-1}" = 1 ]; }; then
  echo "pwb: installing missing packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null || {
    echo "pwb: apt-get install failed for:$missing" >&2; exit 1; }
  exit 0
fi
echo "pwb: missing build dependencies. Install them with:" >&2
echo "  sudo apt-get install$missing" >&2
exit 1
