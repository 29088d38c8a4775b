#!/usr/bin/env bash
# Wait for the background job (at most $1 seconds), then pack /tmp/r into $OUT.
deadline=$(( $(date +%s) + $1 ))
while [ ! -f /tmp/r/alexnet.rc ] && [ $(date +%s) -lt $deadline ]; do
  sleep 20; echo "== $(date +%T)"; tail -n 3 /tmp/r/alexnet.log 2>/dev/null | cut -c1-200
done
cat /tmp/r/lenet.rc /tmp/r/alexnet.rc 2>/dev/null; tail -n 15 /tmp/r/lenet.log
tail -n 30 /tmp/r/alexnet.log
cd /tmp && tar czf /tmp/r.tgz r && ls -la /tmp/r.tgz && split -b 15m -d /tmp/r.tgz $OUT/r.tgz.part
ls -la $OUT
