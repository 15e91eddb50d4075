CREATE TABLE {{tables.orders}} (
    id SERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES {{tables.users}} (id),
    total NUMERIC(10, 2) NOT NULL,
    placed_on DATE NOT NULL,
    tags TEXT[] NOT NULL DEFAULT '{}',
    details JSONB
);
