-- Herald's own tables. The herald schema is created by the migrator before this runs.

CREATE TABLE herald.dispatches (
    id              uuid PRIMARY KEY,
    event_id        text        NOT NULL,
    refs            jsonb       NOT NULL DEFAULT '[]',
    vars            jsonb       NOT NULL DEFAULT '{}',  -- non-secret variables, exact JSON
    sealed          jsonb,                              -- producer secrets: name -> sealed value
    minted          jsonb,                              -- SendVariables output: name -> {"sealed"|"value"}
    actor           text        NOT NULL DEFAULT '',
    idempotency_key text,
    fingerprint     text        NOT NULL DEFAULT '',
    duplicate_of    uuid,
    status          text        NOT NULL DEFAULT 'accepted'
        CHECK (status IN ('accepted','fanning_out','fanned_out','retrying','failed','rejected','duplicate')),
    attempt         integer     NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    enqueued_at     timestamptz,
    last_error      text,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    scrubbed_at     timestamptz
);

CREATE UNIQUE INDEX dispatches_idempotency ON herald.dispatches (event_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX dispatches_open ON herald.dispatches (due_at)
    WHERE status IN ('accepted','retrying','fanning_out');
CREATE INDEX dispatches_with_secrets ON herald.dispatches (updated_at)
    WHERE sealed IS NOT NULL OR minted IS NOT NULL;

CREATE TABLE herald.receipts (
    id                uuid PRIMARY KEY,
    dispatch_id       uuid        NOT NULL REFERENCES herald.dispatches (id),
    event_id          text        NOT NULL,
    channel_key       text        NOT NULL,
    transport         text        NOT NULL,
    audience          text        NOT NULL DEFAULT '',
    recipient_id      text        NOT NULL,
    recipient         jsonb       NOT NULL DEFAULT '{}',
    status            text        NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('scheduled','sending','sent','retrying','failed','expired','skipped','canceled')),
    attempt           integer     NOT NULL DEFAULT 0,
    max_attempts      integer     NOT NULL DEFAULT 10,
    due_at            timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    lease_until       timestamptz,
    enqueued_at       timestamptz,
    in_doubt          boolean     NOT NULL DEFAULT false,
    last_error        text,
    subject           text,
    message_id        text,
    provider_response text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    sent_at           timestamptz,
    UNIQUE (dispatch_id, channel_key, recipient_id)
);

CREATE INDEX receipts_open ON herald.receipts (due_at)
    WHERE status IN ('scheduled','retrying','sending');

CREATE TABLE herald.rejected_tasks (
    id             bigserial PRIMARY KEY,
    task_type      text        NOT NULL,
    task_id        text        NOT NULL DEFAULT '',
    queue          text        NOT NULL DEFAULT '',
    reason         text        NOT NULL,
    payload_size   integer     NOT NULL DEFAULT 0,
    payload_sha256 text        NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The development mailbox (HERALD_SMTP_URL=capture://): mail is stored here instead of sent.
CREATE TABLE herald.dev_mailbox (
    id         bigserial PRIMARY KEY,
    receipt_id uuid,
    message_id text        NOT NULL,
    mail_from  text        NOT NULL,
    rcpt_to    text        NOT NULL,
    subject    text        NOT NULL,
    html_body  text        NOT NULL,
    text_body  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
