// Package herald is the entry point of a Herald worker: Config, ConfigFromEnv and Run.
//
// Teams with Go event types build their own worker binary — a main that registers their events
// and calls Run (your handlers, our server). The reference binary, cmd/worker, does exactly that
// with the example events.
//
//	reg := events.NewRegistry()
//	reg.MustRegister(myapp.WelcomeEmail{})
//	cfg, err := herald.ConfigFromEnv(os.Getenv)
//	…
//	err = herald.Run(ctx, cfg, reg)
package herald
