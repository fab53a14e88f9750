package channels_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels"
)

// SMS is a transport of your own: it "sends" by printing. A real one would call a provider's
// API and classify its failures.
type SMS struct{ Out io.Writer }

var _ channels.Sender = SMS{}

// Send implements channels.Sender: the text part goes to m.To, the recipient's address.
func (s SMS) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	if err := ctx.Err(); err != nil {
		return channels.Result{}, &channels.Error{Class: channels.Temporary, Err: err}
	}
	if m.Text == "" {
		return channels.Result{}, channels.Permanentf("sms to %s: the message has no text part", m.To)
	}
	fmt.Fprintf(s.Out, "SMS to %s: %s\n", m.To, m.Text)
	return channels.Result{ProviderResponse: "printed"}, nil
}

// A transport is registered by name in Config.Senders; events name it in their channels
// (events.Channel{Transport: "sms", …}) and give "sms.text.tmpl" templates. Failures say
// whether a retry may help: a provider's 429 would be RateLimited with its RetryAfter.
func ExampleSender() {
	cfg := herald.Config{Senders: map[string]channels.Sender{"sms": SMS{Out: os.Stdout}}} // then herald.Run(ctx, cfg, reg)

	sms := cfg.Senders["sms"] // what a delivery on an "sms" channel calls
	res, err := sms.Send(context.Background(), channels.Message{To: "+15550100", Text: "Your code is 4242"})
	fmt.Println(res.ProviderResponse, err)
	_, err = sms.Send(context.Background(), channels.Message{To: "+15550100"})
	fmt.Println(channels.ClassOf(err), err)
	fmt.Println(channels.ClassOf(&channels.Error{Class: channels.RateLimited, Code: http.StatusTooManyRequests}))
	// Output:
	// SMS to +15550100: Your code is 4242
	// printed <nil>
	// permanent permanent: sms to +15550100: the message has no text part
	// rate-limited
}
