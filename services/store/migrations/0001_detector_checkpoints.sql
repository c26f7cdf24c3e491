-- The streaming detector's checkpoints: per partition of the readings topic, the next
-- offset to read and the detector's clock, and every pump's state, written together in
-- one transaction so a restart resumes exactly where the last checkpoint left off.

CREATE TABLE detector_partition (
    consumer_group text   NOT NULL,
    topic          text   NOT NULL,
    partition      int    NOT NULL,
    -- Raised by each new owner of the partition; a checkpoint from an older owner
    -- (one that lost the partition in a rebalance) no longer matches and is refused.
    epoch          bigint NOT NULL,
    -- The first offset not yet reflected in the state; NULL before the first checkpoint.
    next_offset    bigint,
    -- The detector's event-time clock, in nanoseconds since the Unix epoch.
    clock_ns       bigint,
    -- The encoding of detector_pump.state; a build refuses state it cannot read.
    state_format   int    NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);

CREATE TABLE detector_pump (
    consumer_group text  NOT NULL,
    topic          text  NOT NULL,
    partition      int   NOT NULL,
    -- First-seen order within the partition: simultaneous deadlines fire in this order,
    -- so a restored detector emits events in the same order as the saved one would.
    ordinal        int   NOT NULL,
    pump_id        text  NOT NULL,
    state          bytea NOT NULL,
    PRIMARY KEY (consumer_group, topic, partition, ordinal),
    UNIQUE (consumer_group, topic, partition, pump_id),
    FOREIGN KEY (consumer_group, topic, partition)
        REFERENCES detector_partition (consumer_group, topic, partition) ON DELETE CASCADE
);
