#!/usr/bin/env bash
# The Python package's tests (python/): pytest with pytest-django against real PostgreSQL, the broker
# in KAFKA_BROKERS and the binaries in target/debug (test.sh runs it after cargo test, which built
# them). Creates or reuses a virtualenv ($RELAY_VENV, default ~/.cache/relay/venv) and installs
# ./python[test] into it as a user would. The last line is `python: N passed, M failed`, which
# test.sh adds to the suite's closing line; the exit code is pytest's (non-zero if anything failed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$RELAY_ROOT"

venv="${RELAY_VENV:-$HOME/.cache/relay/venv}"
stack="$RELAY_ROOT/.stack/test"
mkdir -p "$stack"
report="$stack/pytest.xml"
rm -f "$report"

ensure_postgres
export RELAY_TEST_PG="${RELAY_TEST_PG:-$(pg_url)}"
if [[ -z "${KAFKA_BROKERS:-}" ]]; then
  log "KAFKA_BROKERS is not set: run the Python tests through \`make test\` (it starts a broker)"
  echo "python: 0 passed, 1 failed"
  exit 1
fi

set +e
(
  set -e
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "./python[test]"
  # Standalone runs: make sure the binaries the tests start exist (a no-op after cargo test).
  cargo build --quiet --locked -p relay -p relay-demo --bins
) >"$stack/python-setup.log" 2>&1
setup=$?
if [[ $setup -ne 0 ]]; then
  tail -n 30 "$stack/python-setup.log" >&2
  log "could not set up the Python tests (log: $stack/python-setup.log)"
  echo "python: 0 passed, 1 failed"
  exit 1
fi
(cd python && "$venv/bin/python" -m pytest -q --junitxml="$report" "$@")
status=$?
set -e

# Counts from the JUnit report; no report means pytest could not run at all.
"$venv/bin/python" - "$report" "$status" <<'PY'
import sys
import xml.etree.ElementTree as ET

path, status = sys.argv[1], int(sys.argv[2])
try:
    suites = ET.parse(path).getroot()
except (OSError, ET.ParseError):
    print("python: 0 passed, 1 failed")
    raise SystemExit
suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
passed = int(suite.get("tests", 0)) - failed - int(suite.get("skipped", 0))
if status != 0 and failed == 0:
    failed = 1  # pytest failed outside any test (collection, internal error, no tests)
print(f"python: {passed} passed, {failed} failed")
PY
exit "$status"
