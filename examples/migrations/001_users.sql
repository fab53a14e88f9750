CREATE TABLE herald_example.users (
    id         text PRIMARY KEY,
    email      text        NOT NULL UNIQUE,
    name       text        NOT NULL DEFAULT '',
    locale     text        NOT NULL DEFAULT 'en',
    created_at timestamptz NOT NULL DEFAULT now()
);
