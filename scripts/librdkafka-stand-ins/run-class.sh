#!/usr/bin/env bash
# Stand-in for librdkafka's tests/java/run-class.sh, which runs a class of the Java programs next
# to it with the Kafka distribution's Java client. scripts/librdkafka-suite installs it into its
# work copy of the tests, with the stand-ins it dispatches to beside it.
#
# TransactionProducerCli (test 0098) runs transaction_producer_cli.py, the same commands with
# confluent-kafka; there is no stand-in for the other classes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" >/dev/null 2>&1 && pwd)"
class="${1:-}"
[ $# -eq 0 ] || shift
case "$class" in
    TransactionProducerCli) exec "${PYTHON:-python3}" "$here/transaction_producer_cli.py" "$@" ;;
    *)
        echo "run-class.sh stand-in: no stand-in for the Java class '$class'" >&2
        exit 1
        ;;
esac
