#!/bin/bash
# Resident memory of an idle `strata serve` (one process): starts it against $STRATA_DATABASE_URL three
# times, waits for /health, reads VmRSS. usage: bash bench/serve-rss.sh <label>  (DIR: the checkout)
cd "${DIR:-$(dirname "$0")/..}"
for i in 1 2 3; do
STRATA_DATABASE_URL=${STRATA_DATABASE_URL:?a migrated database URL} STRATA_REGION=r1 STRATA_LISTEN=127.0.0.1:18999 STRATA_SPOOL_DIR=/tmp/rss-spool STRATA_GATEWAY_PROCESSES=1 STRATA_LOG_LEVEL=error node bin/strata.js serve > /tmp/rss.out 2>&1 &
P=$!
for t in $(seq 1 100); do curl -s -o /dev/null http://127.0.0.1:18999/health && break; sleep 0.2; done
sleep 2
echo "$1 run $i: pid $P rss $(grep VmRSS /proc/$P/status | awk '{print $2}') kB"
kill $P; wait $P 2>/dev/null
done
