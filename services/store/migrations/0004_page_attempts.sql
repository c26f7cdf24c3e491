-- Every delivery attempt of every page, as it happened: where it went and what came
-- back. The page row holds the current state; this is its history.

CREATE TABLE page_attempt (
    alarm_id   text NOT NULL,
    revision   int  NOT NULL,
    escalation int  NOT NULL,
    -- 1 for the first attempt of the page.
    attempt    int  NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    -- The receiver's URL ('' when the clinic was not in the registry).
    endpoint   text NOT NULL,
    target     text NOT NULL,
    accepted   boolean NOT NULL,
    -- The receipt id when accepted, the error otherwise.
    detail     text NOT NULL,
    PRIMARY KEY (alarm_id, revision, escalation, attempt),
    FOREIGN KEY (alarm_id, revision, escalation)
        REFERENCES page (alarm_id, revision, escalation) ON DELETE CASCADE
);
