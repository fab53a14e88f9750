package capture_test

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/channels/capture"
	"github.com/heraldhq/herald/channels/channeltest"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func TestConformance(t *testing.T) {
	channeltest.Run(t, func(t *testing.T) channeltest.Harness {
		db := testenv.DB(t)
		store := ledger.New(db)
		return channeltest.Harness{
			Sender: capture.New(db),
			Received: func(t *testing.T) []channeltest.Delivered {
				ms, err := store.ListMail(t.Context(), 100)
				if err != nil {
					t.Fatal(err)
				}
				var out []channeltest.Delivered
				for _, m := range ms {
					out = append(out, channeltest.Delivered{MessageID: m.MessageID, To: m.To, Subject: m.Subject, HTML: m.HTML, Text: m.Text})
				}
				return out
			},
		}
	})
}

func TestCapturedFromFormat(t *testing.T) {
	t.Parallel()
	if !strings.Contains(capture.New(testenv.DB(t)).String(), "capture") {
		t.Fatal("String")
	}
}
