#!/bin/sh
# Legacy PostgreSQL: initialise once (checksums, scram), then always refresh the sandbox settings.
set -eu
PGDATA=/var/lib/postgresql/data/pg
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" --data-checksums --encoding=UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 --username=postgres --pwfile=/run/sandbox/pwfile
  echo "include_if_exists = 'sandbox.conf'" >> "$PGDATA/postgresql.conf"
fi
rm -f /run/sandbox/pwfile
install -m 600 /sbx/sandbox.conf "$PGDATA/sandbox.conf"
install -m 600 /sbx/pg_hba.conf "$PGDATA/pg_hba.conf"
exec postgres -D "$PGDATA" -p "$PGPORT"
