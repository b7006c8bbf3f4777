#!/usr/bin/env bash
# What the test suite needs from the machine: the Debian packages of tests/debian-packages.txt,
# the PostgreSQL and Redis servers on 127.0.0.1 and the Docker engine (dockerd of the docker.io
# package, for the Compose stack test). As root, installs the missing packages
# (apt-get update only then) and starts a server that is down. Otherwise, if anything is
# missing, one message names it with the commands that fix it, and the exit status is 1.
# Then, as any user, the npm packages of the browser tests (tests/browser/package-lock.json:
# axe-core) into tests/browser/node_modules, only when that lock file changed since.
set -euo pipefail
cd "$(dirname "$0")/.."

listening() {  # port: something accepts TCP connections on 127.0.0.1:port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running() {  # server: it answers
  case $1 in
    docker) timeout 10 docker version >/dev/null 2>&1 ;;
    *) listening "${PORTS[$1]}" ;;
  esac
}

start_server() {  # name: start one of the machine's servers, wait until it listens
  local daemon=""
  case $1 in
    postgresql)
      pg_lsclusters --no-header | while read -r version cluster _ status _; do
        if [[ $status == down ]]; then
          pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
        fi
      done ;;
    redis) redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null ;;
    docker) setsid dockerd >"$DOCKERD_LOG" 2>&1 </dev/null & daemon=$! ;;
  esac
  local deadline=$((SECONDS + 30))
  until running "$1"; do
    if [[ -n $daemon ]] && ! kill -0 "$daemon" 2>/dev/null; then
      echo "dockerd exited at start; the end of its log ($DOCKERD_LOG):" >&2
      tail -n 5 "$DOCKERD_LOG" >&2
      return 1
    fi
    ((SECONDS < deadline)) || { echo "started $1, but it ${DOWN[$1]} after 30 s" >&2; return 1; }
    sleep 0.5
  done
}

declare -A PORTS=([postgresql]=5432 [redis]=6379)
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
declare -A DOWN=(
  [postgresql]="is not listening on 127.0.0.1:5432"
  [redis]="is not listening on 127.0.0.1:6379"
  [docker]="(dockerd, log in $DOCKERD_LOG) does not answer"
)

packages=()
while read -r package command _; do
  [[ -z ${package:-} || $package == \#* ]] && continue
  command -v "$command" >/dev/null 2>&1 || packages+=("$package")
done < tests/debian-packages.txt

servers=()
for server in postgresql redis docker; do
  running "$server" || servers+=("$server")
done

if [[ $(id -u) != 0 ]] && ((${#packages[@]} + ${#servers[@]})); then
  {
    echo "make test cannot start: this machine lacks what the tests need."
    ((${#packages[@]})) && echo "  Debian packages: ${packages[*]}
    install: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${packages[*]}"
    for server in "${servers[@]}"; do
      echo "  $server ${DOWN[$server]}: start it"
    done
    echo "  (as root, 'make test-deps' installs and starts all of it)"
  } >&2
  exit 1
fi

if ((${#packages[@]})); then
  echo "installing Debian packages the tests need: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
for server in "${servers[@]}"; do
  echo "starting $server"
  start_server "$server"
done

BROWSER=tests/browser
if [[ -f $BROWSER/package-lock.json ]] \
  && ! cmp -s "$BROWSER/package-lock.json" "$BROWSER/node_modules/.installed-lock.json"; then
  echo "installing the npm packages of the browser tests ($BROWSER/package-lock.json)"
  (cd "$BROWSER" && npm ci --loglevel=error --no-audit --no-fund --ignore-scripts >/dev/null)
  cp "$BROWSER/package-lock.json" "$BROWSER/node_modules/.installed-lock.json"
fi
