-- Carers' home visits (docs/visits.md): the providers the city pays, their
-- carers, and each elder's visit plans; and the elders' daily wellbeing
-- check-in window (local HH:MM-HH:MM, NULL when not opted in).
ALTER TABLE elders ADD COLUMN check_in TEXT;

CREATE TABLE providers (
    provider_id TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    phone       TEXT,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE carers (
    carer_id    TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL REFERENCES providers(provider_id),
    name        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX carers_provider ON carers(provider_id);

CREATE TABLE visit_plans (
    plan_id      TEXT PRIMARY KEY,
    elder_id     TEXT NOT NULL REFERENCES elders(elder_id),
    provider_id  TEXT NOT NULL REFERENCES providers(provider_id),
    days         TEXT NOT NULL,
    window_start TEXT NOT NULL,
    window_end   TEXT NOT NULL,
    length_min   INTEGER NOT NULL,
    service      TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX visit_plans_elder ON visit_plans(elder_id);
CREATE INDEX visit_plans_provider ON visit_plans(provider_id);
