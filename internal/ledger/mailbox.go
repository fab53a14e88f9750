package ledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Mail is a message in the development mailbox.
type Mail struct {
	ID        int64
	ReceiptID string
	MessageID string
	From      string
	To        string
	Subject   string
	HTML      string
	Text      string
	CreatedAt time.Time
}

// InsertMail stores a captured message.
func (s *Store) InsertMail(ctx context.Context, m Mail) (int64, error) {
	var id int64
	err := s.q.QueryRow(ctx, `INSERT INTO herald.dev_mailbox (receipt_id, message_id, mail_from, rcpt_to, subject, html_body, text_body)
		VALUES (NULLIF($1, '')::uuid, $2, $3, $4, $5, $6, $7) RETURNING id`,
		m.ReceiptID, m.MessageID, m.From, m.To, m.Subject, m.HTML, m.Text).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("store captured mail for receipt %s: %w", m.ReceiptID, err)
	}
	return id, nil
}

const mailColumns = `id, COALESCE(receipt_id::text, ''), message_id, mail_from, rcpt_to, subject, html_body, text_body, created_at`

func scanMail(row pgx.Row) (Mail, error) {
	var m Mail
	err := row.Scan(&m.ID, &m.ReceiptID, &m.MessageID, &m.From, &m.To, &m.Subject, &m.HTML, &m.Text, &m.CreatedAt)
	return m, err
}

// ListMail returns the newest captured messages first.
func (s *Store) ListMail(ctx context.Context, limit int) ([]Mail, error) {
	rows, err := s.q.Query(ctx, `SELECT `+mailColumns+` FROM herald.dev_mailbox ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("list mailbox: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Mail, error) { return scanMail(r) })
}

// GetMail returns one captured message by id.
func (s *Store) GetMail(ctx context.Context, id int64) (Mail, error) {
	m, err := scanMail(s.q.QueryRow(ctx, `SELECT `+mailColumns+` FROM herald.dev_mailbox WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("mail %d: %w", id, ErrNotFound)
	}
	return m, err
}
