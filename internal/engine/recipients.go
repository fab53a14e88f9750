package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/heraldhq/herald/events"
)

// fanoutPos is where a fan-out has got to: stored with each chunk it commits.
type fanoutPos struct {
	Channel string `json:"channel"`            // key of the channel being fanned out ("" before the first)
	Cursor  string `json:"cursor,omitempty"`   // RecipientPager: the next page's cursor
	Offset  int    `json:"offset,omitempty"`   // plain Recipients: how many of the list are committed
	LastKey string `json:"last_key,omitempty"` // plain Recipients: the key of the last one committed
	Chunks  int    `json:"chunks"`             // chunks committed so far
	Done    bool   `json:"-"`                  // nothing after this chunk
}

// progress reads where an earlier attempt or time slice of this fan-out stopped.
func (f *fanout) progress(chs []events.Channel) fanoutPos {
	pos := fanoutPos{Channel: chs[0].Key}
	if f.row.Progress == nil {
		return pos
	}
	if err := json.Unmarshal(f.row.Progress, &pos); err != nil {
		return fanoutPos{Channel: chs[0].Key} // unreadable: start over (ON CONFLICT keeps it single)
	}
	return pos
}

// recipientPages walks the channels' recipients from a position, one chunk at a time.
type recipientPages struct {
	ev   events.Event
	d    *events.Dispatch
	chs  []events.Channel
	pos  fanoutPos
	size int
	list []events.Recipient // plain Recipients of the current channel, fetched once per run
	for_ string             // the channel list belongs to
}

// next returns the channel and recipients of the next chunk and the position after it.
func (p *recipientPages) next(ctx context.Context) (events.Channel, []events.Recipient, fanoutPos, error) {
	i := slices.IndexFunc(p.chs, func(c events.Channel) bool { return c.Key == p.pos.Channel })
	if i < 0 {
		i, p.pos = 0, fanoutPos{Channel: p.chs[0].Key, Chunks: p.pos.Chunks} // the channels changed: start over
	}
	ch := p.chs[i]
	var rcs []events.Recipient
	next := p.pos
	if pager, ok := p.ev.(events.RecipientPager); ok {
		page, cursor, err := pager.RecipientsPage(ctx, p.d, ch, p.pos.Cursor, p.size)
		if err != nil {
			return ch, nil, next, fmt.Errorf("recipients of channel %q: %w", ch.Key, err)
		}
		rcs, next.Cursor = page, cursor
		if cursor != "" {
			p.pos = next
			return ch, rcs, next, nil
		}
	} else {
		if p.for_ != ch.Key {
			list, err := p.ev.Recipients(ctx, p.d, ch)
			if err != nil {
				return ch, nil, next, fmt.Errorf("recipients of channel %q: %w", ch.Key, err)
			}
			p.list, p.for_ = list, ch.Key
			// Resuming into a list fetched again: if it changed before the offset (a recipient
			// left or joined), the offset no longer points after what was committed. Start the
			// channel over; receipts already written are kept once (ON CONFLICT).
			if o := p.pos.Offset; o > 0 && (o > len(list) || list[o-1].Key() != p.pos.LastKey) {
				p.pos.Offset = 0
			}
		}
		from := min(p.pos.Offset, len(p.list))
		to := min(from+p.size, len(p.list))
		rcs, next.Offset = p.list[from:to], to
		if to > 0 {
			next.LastKey = p.list[to-1].Key()
		}
		if to < len(p.list) {
			p.pos = next
			return ch, rcs, next, nil
		}
	}
	// This channel is done: the next position is the start of the next channel.
	if i+1 < len(p.chs) {
		next = fanoutPos{Channel: p.chs[i+1].Key, Chunks: p.pos.Chunks}
	} else {
		next.Done = true
	}
	p.pos = next
	return ch, rcs, next, nil
}
