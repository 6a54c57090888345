#!/usr/bin/env bash
# The README's first command: takes a fresh Debian 12 machine to a running Kiln farm, a master
# and one local slave. Data lives in $KILN_DATA_DIR (default ./kiln-data); the address is
# $KILN_LISTEN (default 127.0.0.1:8080). Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${KILN_DATA_DIR:-$ROOT/kiln-data}
LISTEN=${KILN_LISTEN:-127.0.0.1:8080}

scripts/install-deps.sh
scripts/enable-binfmt.sh || true
cargo build --release --bins
scripts/build-console.sh
BIN=$ROOT/target/release

if [ ! -f "$DATA/kiln.toml" ]; then
  "$BIN/kiln-master" init --data-dir "$DATA" --listen "$LISTEN"
fi
# The embedded PostgreSQL runs as an unprivileged user when we are root: it must reach DATA.
chmod o+x "$DATA" 2>/dev/null || true

"$BIN/kiln-master" --config "$DATA/kiln.toml" --console-dir "$ROOT/frontend/dist" \
  > >(tee "$DATA/master.out") 2> "$DATA/master.log" &
MASTER=$!
trap 'kill $MASTER ${SLAVE:-} 2>/dev/null; wait' EXIT INT TERM
for _ in $(seq 1 600); do
  grep -q "kiln-master ready on" "$DATA/master.out" 2>/dev/null && break
  kill -0 $MASTER 2>/dev/null || { echo "kiln-master failed to start:"; cat "$DATA/master.log"; exit 1; }
  sleep 0.1
done
URL=$(sed -n 's/^kiln-master ready on //p' "$DATA/master.out" | tail -1)
TOKEN=$(cat "$DATA/admin.token")

# One local slave, enrolled once with a one-use registration token; its own token stays in its
# work dir (0600), never on a command line.
mkdir -p "$DATA/work"
if [ -s "$DATA/slave.token" ] && [ ! -s "$DATA/work/slave.token" ]; then
  # Kept next to the admin token by an earlier version of this script.
  install -m 600 "$DATA/slave.token" "$DATA/work/slave.token"
  printf '{"name":"%s","tags":[]}\n' "$(cat "$DATA/slave.name")" > "$DATA/work/registration.json"
fi
if [ ! -s "$DATA/work/slave.token" ]; then
  NAME=${KILN_SLAVE_NAME:-$(hostname -s | tr -c 'A-Za-z0-9._\n-' '-')}
  # The admin token goes to curl through a file descriptor, never its command line (ps shows it).
  REG=$(curl -fsS -H @<(printf 'Authorization: Bearer %s\n' "$TOKEN") -H 'content-type: application/json' \
       -d "{\"name\":\"$NAME\",\"expires_in_s\":600,\"uses\":1}" "$URL/api/slaves/registration-tokens" \
    | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
  printf '%s\n' "$REG" | "$BIN/kiln-slave" register --master "$URL" --registration-token - \
    --name "$NAME" --work-dir "$DATA/work"
fi
"$BIN/kiln-slave" --master "$URL" --work-dir "$DATA/work" 2> "$DATA/slave.log" &
SLAVE=$!

# The first person to sign in: a local admin account with a one-time password, made once and kept
# (0600) in the data dir until it is changed in the console (Account page).
ADMIN=${KILN_ADMIN_USER:-lead}
if [ ! -e "$DATA/first-admin.password" ]; then
  ANSWER=$(curl -fsS -H @<(printf 'Authorization: Bearer %s\n' "$TOKEN") -H 'content-type: application/json' \
       -d "{\"username\":\"$ADMIN\",\"admin\":true}" "$URL/api/users")
  (umask 077; printf '%s\n' "$ANSWER" | sed -n 's/.*"password":"\([^"]*\)".*/\1/p' > "$DATA/first-admin.password")
fi

cat <<MSG

  Kiln is running at $URL  (open it in a browser)
  Sign in as:        $ADMIN, with the one-time password in $DATA/first-admin.password
                     (change it on the Account page; more people: Users, or 'kiln-master user add')
  API token:         $DATA/admin.token  (an admin API token: 'Authorization: Bearer <token>')
  Logs:              $DATA/master.log, $DATA/slave.log
  Try:               curl -H @<(printf 'Authorization: Bearer %s' "\$(cat $DATA/admin.token)") $URL/api/slaves
  API reference:     docs/api.md

MSG
wait $MASTER
