#!/bin/sh
# PID 1 of the demo app's container. busybox httpd ignores SIGTERM when it is PID 1 (the
# kernel drops signals PID 1 has no handler for), so it runs as this shell's child and the
# shell turns TERM/INT into a prompt, clean exit. Nothing is written to the filesystem: the
# image works with readOnlyRootFilesystem.
#
# Environment: PORT (default 8080), GIT_SHA and FLAG_* (shown by GET /).
set -eu
httpd -f -p "${PORT:-8080}" -h /www &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 0' TERM INT
echo "prenv-demo-app: listening on :${PORT:-8080} (sha=${GIT_SHA:-unknown})" >&2
# wait returns early (status > 128) when a trapped signal arrives; the trap then exits.
set +e
wait "$pid"
status=$?
echo "prenv-demo-app: httpd exited with status $status" >&2
exit "$status"
