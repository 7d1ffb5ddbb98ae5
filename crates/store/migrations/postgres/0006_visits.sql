-- Carers' home visits (docs/visits.md): the providers the city pays, their
-- carers, and each elder's visit plans; the elders' daily wellbeing
-- check-in window (local HH:MM-HH:MM, NULL when not opted in); and the
-- two fields of a `visit` event reading.

ALTER TABLE elders ADD COLUMN check_in text;

CREATE TABLE providers (
    provider_id text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL,
    phone       text,
    updated_at  bigint NOT NULL
);

CREATE TABLE carers (
    carer_id    text COLLATE "C" PRIMARY KEY,
    provider_id text COLLATE "C" NOT NULL REFERENCES providers (provider_id),
    name        text NOT NULL,
    updated_at  bigint NOT NULL
);
CREATE INDEX carers_provider ON carers (provider_id);

CREATE TABLE visit_plans (
    plan_id      text COLLATE "C" PRIMARY KEY,
    elder_id     text COLLATE "C" NOT NULL REFERENCES elders (elder_id),
    provider_id  text COLLATE "C" NOT NULL REFERENCES providers (provider_id),
    days         text NOT NULL,
    window_start text NOT NULL,
    window_end   text NOT NULL,
    length_min   integer NOT NULL,
    service      text NOT NULL,
    updated_at   bigint NOT NULL
);
CREATE INDEX visit_plans_elder ON visit_plans (elder_id);
CREATE INDEX visit_plans_provider ON visit_plans (provider_id);

-- A `visit` event (event_type 4): the carer's id, and the action as
-- 1 in, 2 out. NULL for every other reading, so they cost only the null
-- bitmap. Added at the end: the partitions and chunks take them too.
--
--   event_type: 1 sos, 2 fall, 3 sos_cancel, 4 visit, 5 check_in
ALTER TABLE readings ADD COLUMN visit_action smallint;
ALTER TABLE readings ADD COLUMN carer text;
