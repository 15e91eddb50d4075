-- Migrations of tests/tests/test_attr.rs. The sleep widens the window in which concurrent
-- tests find the template being built (it asserts that only one process builds it).
SELECT pg_sleep(0.3);
CREATE TABLE {{tables.items}} (
    id SERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    price NUMERIC(10, 2) NOT NULL,
    added_on DATE,
    added_at TIMESTAMPTZ,
    tags TEXT[],
    attrs JSONB,
    ref UUID,
    flag BOOLEAN NOT NULL DEFAULT false
);
