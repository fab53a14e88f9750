package examples

import (
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/receipts"
)

// Options configures the example events.
type Options struct {
	ResetKey []byte // signing key of reset tokens (32+ bytes); empty: minting fails, as it should
	BaseURL  string // the application's base URL for links
}

// Register adds the example events and the users loader to reg.
func Register(reg *events.Registry, db receipts.Querier, o Options) error {
	if err := reg.Register(PasswordReset{Tokens: &Tokens{Key: o.ResetKey}, BaseURL: o.BaseURL}); err != nil {
		return err
	}
	return reg.RegisterLoader("users", UsersLoader{DB: db})
}
