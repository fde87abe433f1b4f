"""The legacy database's application schema and data, and the roles every database needs.

Two application profiles, so the runbooks are tried on a schema they were not written against:

- `notes` (the default): accounts -> collections -> entries (vector(384) with an HNSW index), tags joined
  through entry_tags, invoices numbered from a sequence, and a time-partitioned events table, all in public.
- `ledger`: two schemas beyond public (ledger, search), an enum type and a domain, identity columns, a
  sequence shared by two tables, a range-partitioned postings table, large objects (signed contracts), a
  materialized view, and a vector(64) column named differently with an L2 HNSW index.

Data is generated server-side so seeding stays fast; `scale` multiplies row counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

ROW_COUNTS = {"accounts": 100, "collections": 300, "entries": 2000, "invoices": 500, "events": 20000}
DIM = 384
MARKER = "public.sandbox_seed"  # one row: the profile and scale the legacy database was seeded with

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text NOT NULL,
    plan text NOT NULL DEFAULT 'free',
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE collections (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id),
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX collections_account_id_idx ON collections(account_id);
CREATE TABLE entries (
    id bigserial PRIMARY KEY,
    collection_id bigint NOT NULL REFERENCES collections(id),
    account_id bigint NOT NULL REFERENCES accounts(id),
    title text NOT NULL,
    body text NOT NULL,
    embedding vector(384) NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX entries_collection_id_idx ON entries(collection_id);
CREATE INDEX entries_account_id_idx ON entries(account_id);
CREATE TABLE tags (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE entry_tags (
    entry_id bigint NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
    tag_id int NOT NULL REFERENCES tags(id),
    PRIMARY KEY (entry_id, tag_id));
CREATE INDEX entry_tags_tag_id_idx ON entry_tags(tag_id);
CREATE SEQUENCE invoice_number_seq START 100000;
CREATE TABLE invoices (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts(id),
    number bigint NOT NULL UNIQUE DEFAULT nextval('invoice_number_seq'),
    amount_cents integer NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX invoices_account_id_idx ON invoices(account_id);
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL,
    account_id bigint NOT NULL REFERENCES accounts(id),
    entry_id bigint,
    kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, occurred_at)) PARTITION BY RANGE (occurred_at);
CREATE INDEX events_account_id_idx ON events(account_id);
CREATE INDEX events_occurred_at_idx ON events(occurred_at);
CREATE TABLE events_default PARTITION OF events DEFAULT;
"""

MARKER_TABLE = """
CREATE TABLE public.sandbox_seed (id integer PRIMARY KEY DEFAULT 1 CHECK (id = 1), scale integer NOT NULL,
                                  seeded_at timestamptz NOT NULL DEFAULT now(), profile text);
"""

PARTITIONS = """
SELECT format('CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
              'events_' || to_char(m, 'YYYY_MM'), m, m + interval '1 month')
FROM generate_series(date_trunc('month', now()) - interval '3 months',
                     date_trunc('month', now()) + interval '3 months', interval '1 month') AS m
"""

DATA = """
INSERT INTO accounts (email, display_name, plan)
  SELECT 'user' || g || '@example.test', 'User ' || g, (ARRAY['free','pro','team'])[1 + g % 3]
  FROM generate_series(1, {accounts}) g;
INSERT INTO collections (account_id, name)
  SELECT 1 + g % {accounts}, 'collection ' || g FROM generate_series(1, {collections}) g;
INSERT INTO tags (name) SELECT 'tag' || g FROM generate_series(1, 50) g;
INSERT INTO entries (collection_id, account_id, title, body, embedding, metadata, created_at)
  SELECT c.id, c.account_id, 'entry ' || g, repeat('lorem ipsum ', 5 + g % 20), v.e,
         jsonb_build_object('source', (ARRAY['web','api','import'])[1 + g % 3], 'rank', g % 100),
         now() - (g % 90) * interval '1 day'
  FROM generate_series(1, {entries}) g
  JOIN collections c ON c.id = 1 + g % {collections}
  CROSS JOIN LATERAL (SELECT array_agg(random()::real)::vector(384) AS e
                      FROM generate_series(1, 384) d WHERE g > 0) v;
INSERT INTO entry_tags (entry_id, tag_id)
  SELECT e.id, 1 + (e.id * k) % 50 FROM entries e, generate_series(1, 2) k ON CONFLICT DO NOTHING;
INSERT INTO invoices (account_id, amount_cents, issued_at)
  SELECT 1 + g % {accounts}, 100 + (g * 37) % 10000, now() - (g % 80) * interval '1 day'
  FROM generate_series(1, {invoices}) g;
INSERT INTO events (occurred_at, account_id, entry_id, kind, payload)
  SELECT now() - (g::double precision / {events}) * interval '80 days', 1 + g % {accounts},
         1 + g % {entries}, (ARRAY['view','search','edit','share'])[1 + g % 4], jsonb_build_object('n', g)
  FROM generate_series(1, {events}) g;
CREATE INDEX entries_embedding_hnsw_idx ON entries USING hnsw (embedding vector_cosine_ops)
  WITH (m = 16, ef_construction = 64);
"""


LEDGER_COUNTS = {"customers": 200, "postings": 20000, "documents": 1500, "contracts": 40}
LEDGER_DIM = 64

LEDGER_SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE SCHEMA ledger;
CREATE SCHEMA search;
CREATE TYPE ledger.side AS ENUM ('debit', 'credit');
CREATE DOMAIN ledger.cents AS bigint CHECK (VALUE >= 0);
CREATE SEQUENCE ledger.reference_seq START 5000000;  -- shared: customers and postings draw from it
CREATE TABLE ledger.customers (
    customer_no integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    legal_name text NOT NULL,
    reference bigint NOT NULL UNIQUE DEFAULT nextval('ledger.reference_seq'),
    contract oid,  -- a large object: the signed contract
    opened_on date NOT NULL DEFAULT current_date);
CREATE TABLE ledger.postings (
    posting_no bigint GENERATED ALWAYS AS IDENTITY,
    booked_on date NOT NULL,
    customer_no integer NOT NULL REFERENCES ledger.customers(customer_no),
    side ledger.side NOT NULL,
    amount ledger.cents NOT NULL,
    reference bigint NOT NULL DEFAULT nextval('ledger.reference_seq'),
    memo text,
    PRIMARY KEY (posting_no, booked_on)) PARTITION BY RANGE (booked_on);
CREATE INDEX postings_customer_no_idx ON ledger.postings(customer_no);
CREATE TABLE ledger.postings_older PARTITION OF ledger.postings DEFAULT;
CREATE TABLE search.documents (
    doc_key uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_no integer NOT NULL REFERENCES ledger.customers(customer_no),
    summary text NOT NULL,
    summary_vec vector(64) NOT NULL,
    filed_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX documents_customer_no_idx ON search.documents(customer_no);
"""

LEDGER_PARTITIONS = """
SELECT format('CREATE TABLE ledger.%I PARTITION OF ledger.postings FOR VALUES FROM (%L) TO (%L)',
              'postings_' || to_char(m, 'YYYY_MM'), m::date, (m + interval '1 month')::date)
FROM generate_series(date_trunc('month', now()) - interval '2 months',
                     date_trunc('month', now()) + interval '2 months', interval '1 month') AS m
"""

LEDGER_DATA = """
INSERT INTO ledger.customers (legal_name, contract)
  SELECT 'Customer ' || g || ' Ltd', CASE WHEN g <= {contracts}
         THEN lo_from_bytea(0, convert_to('contract of customer ' || g || repeat(' clause', 50), 'UTF8')) END
  FROM generate_series(1, {customers}) g;
INSERT INTO ledger.postings (booked_on, customer_no, side, amount, memo)
  SELECT (now() - (g % 150) * interval '1 day')::date, 1 + g % {customers},
         (ARRAY['debit','credit']::ledger.side[])[1 + g % 2], 100 + (g * 53) % 100000, 'posting ' || g
  FROM generate_series(1, {postings}) g;
INSERT INTO search.documents (customer_no, summary, summary_vec)
  SELECT 1 + g % {customers}, 'statement ' || g, v.e
  FROM generate_series(1, {documents}) g
  CROSS JOIN LATERAL (SELECT array_agg(random()::real)::vector(64) AS e
                      FROM generate_series(1, 64) d WHERE g > 0) v;
CREATE INDEX documents_summary_vec_hnsw ON search.documents USING hnsw (summary_vec vector_l2_ops);
CREATE MATERIALIZED VIEW ledger.balances AS
  SELECT customer_no, sum(CASE side WHEN 'credit' THEN amount ELSE -amount END) AS balance
  FROM ledger.postings GROUP BY customer_no;
CREATE UNIQUE INDEX balances_customer_no_idx ON ledger.balances(customer_no);
"""


@dataclass(frozen=True)
class Profile:
    """One application the sandbox can serve: its schema, data, the schemas its role uses, and the table a
    reader of it always finds (the profile's mark)."""

    name: str
    schema: str
    partitions: str
    data: str
    counts: dict[str, int]
    schemas: tuple[str, ...]
    mark: str  # a table only this profile has


PROFILES = {
    "notes": Profile("notes", SCHEMA, PARTITIONS, DATA, ROW_COUNTS, ("public",), "public.accounts"),
    "ledger": Profile("ledger", LEDGER_SCHEMA, LEDGER_PARTITIONS, LEDGER_DATA, LEDGER_COUNTS,
                      ("public", "ledger", "search"), "ledger.customers"),
}


class ProfileMismatch(RuntimeError):
    pass

def ensure_roles(conn: psycopg.Connection, app_db: str, app_role: str, app_password: str,
                 monitor_password: str, replication_password: str | None = None) -> None:
    """Least-privilege application role, pg_monitor role and the application database (idempotent).

    On the new cluster also the replication role: Patroni creates it at bootstrap, but a bootstrap
    interrupted after initdb leaves a leader without it and replicas that can never clone.
    """
    conn.autocommit = True
    roles = [(app_role, app_password, "NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"),
             ("monitor", monitor_password, "NOSUPERUSER NOCREATEDB NOCREATEROLE")]
    if replication_password is not None:
        roles.append(("replicator", replication_password, "REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE"))
    for role, password, extra in roles:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL("{} ROLE {} LOGIN " + extra + " PASSWORD {}").format(
            sql.SQL(verb), sql.Identifier(role), sql.Literal(password)))
    conn.execute("GRANT pg_monitor TO monitor")
    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (app_db,)).fetchone():
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(app_db)))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(app_db)))
    conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}, monitor").format(
        sql.Identifier(app_db), sql.Identifier(app_role)))


def grant_app(conn: psycopg.Connection, app_role: str, profile: Profile = PROFILES["notes"]) -> None:
    """DML on the application tables of every schema the profile uses, nothing more (no CREATE in public).
    A schema not there yet (the new cluster before the migration) is left to the migration's schema copy."""
    role = sql.Identifier(app_role)
    _past_a_ddl_freeze(conn)
    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    # recall over speed for k-NN: pgvector's default candidate list (40) gives ~0.95 recall@10 here
    db = _one(conn.execute("SELECT current_database()"))
    conn.execute(sql.SQL("ALTER DATABASE {} SET hnsw.ef_search = 100").format(sql.Identifier(db)))
    conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for name in profile.schemas:
        if _one(conn.execute("SELECT to_regnamespace(%s)", (name,))) is None:
            continue
        schema = sql.Identifier(name)
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}")
                     .format(schema, role))
        conn.execute(sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(schema, role))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE "
                             "ON TABLES TO {}").format(schema, role))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT ON SEQUENCES TO {}")
                     .format(schema, role))


def seed(conn: psycopg.Connection, scale: int, app_role: str,
         profile: Profile = PROFILES["notes"]) -> dict[str, int] | None:
    """Create schema and data in one transaction (a failed seed leaves nothing); None if already seeded.
    Refused when the database holds another profile's application (`runbook sandbox reset` first)."""
    conn.autocommit = True
    _past_a_ddl_freeze(conn)
    if _one(conn.execute("SELECT to_regclass(%s)", (MARKER,))) is not None:
        held = next((p for p in PROFILES.values()
                     if _one(conn.execute("SELECT to_regclass(%s)", (p.mark,))) is not None), None)
        if held is not None and held.name != profile.name:
            raise ProfileMismatch(f"the legacy database holds the {held.name!r} application, not {profile.name!r}: "
                                  "run `runbook sandbox reset` (removes the sandbox's volumes) and `up` again")
        grant_app(conn, app_role, profile)
        if _one(conn.execute("SELECT count(*) FROM pg_stat_user_tables WHERE n_live_tup = 0 AND last_analyze IS NULL "
                             "AND last_autoanalyze IS NULL")):
            conn.execute("ANALYZE")  # statistics were lost (an unclean stop): the planner needs them back
        return None
    counts = {k: v * scale for k, v in profile.counts.items()}
    with conn.transaction():
        conn.execute(profile.schema)
        conn.execute(MARKER_TABLE)
        for (stmt,) in conn.execute(profile.partitions).fetchall():
            conn.execute(stmt)
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute(sql.SQL(profile.data).format(**{k: sql.Literal(v) for k, v in counts.items()}))
        conn.execute("INSERT INTO public.sandbox_seed (scale, profile) VALUES (%s, %s)", (scale, profile.name))
        grant_app(conn, app_role, profile)
    # the seed's row counts reach the statistics only when this backend flushes them; flushed after
    # ANALYZE they would count as modifications since it, and small tables would look stale for good
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("ANALYZE")
    return counts


def _one(cursor: psycopg.Cursor[Any]) -> Any:
    row = cursor.fetchone()
    assert row is not None, "a one-row query returned nothing"
    return row[0]


def _past_a_ddl_freeze(conn: psycopg.Connection) -> None:
    """The sandbox's own upkeep (grants, the seed) is not the application's schema change: a migration that
    froze DDL on legacy and did not finish keeps its freeze (PostgreSQL 17: event triggers off for this session)."""
    conn.execute("SET event_triggers = off")
