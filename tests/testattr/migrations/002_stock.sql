CREATE TABLE {{tables.stock}} (
    item_id INTEGER NOT NULL REFERENCES {{tables.items}} (id),
    qty BIGINT NOT NULL CHECK (qty >= 0)
);
