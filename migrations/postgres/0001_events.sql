-- The event store (shape read and written by postgres-es) plus wagate's commit-ordered global
-- position. Positions are assigned under a transaction-scoped advisory lock that is held until
-- commit, so a lower position can never become visible after a higher one: readers that follow
-- `position` never skip an event (see docs/adr/0001-event-store.md).
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint                       NOT NULL,
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE SEQUENCE events_position_seq AS bigint;
CREATE UNIQUE INDEX events_by_position ON events (position);
CREATE INDEX events_by_recorded_at ON events (recorded_at);

CREATE FUNCTION wagate_assign_event_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    -- 0x77616761 = 'waga': one lock for all event appends, released at commit or rollback.
    PERFORM pg_advisory_xact_lock(2002937697);
    NEW.position := nextval('events_position_seq');
    NEW.recorded_at := clock_timestamp();
    RETURN NEW;
END
$$;

CREATE TRIGGER events_assign_position
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION wagate_assign_event_position();
