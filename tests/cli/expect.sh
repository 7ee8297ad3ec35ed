#!/usr/bin/env bash
# expect.sh CODE REGEX CMD...: runs CMD; passes when it exits CODE and, for a non-zero CODE, its
# stderr is exactly one line matching REGEX (for CODE 0, stdout must match REGEX).
set -u
code=$1 regex=$2
shift 2
out=$("$@" 2>/tmp/expect.$$.err)
rc=$?
err=$(cat /tmp/expect.$$.err)
rm -f /tmp/expect.$$.err
fail() { echo "FAIL: $*"; echo "--- stdout:"; echo "$out" | head -20; echo "--- stderr:"; echo "$err"; exit 1; }
[ "$rc" = "$code" ] || fail "exit code $rc, expected $code: $*"
if [ "$code" = 0 ]; then
  echo "$out" | grep -Eq -- "$regex" || fail "stdout does not match /$regex/"
else
  [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] || fail "stderr is not one line"
  echo "$err" | grep -Eq -- "$regex" || fail "stderr does not match /$regex/"
fi
echo "ok: exit $rc: $*"
