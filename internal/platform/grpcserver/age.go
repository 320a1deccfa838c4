package grpcserver

import (
	"flag"
	"time"

	"github.com/campaignmesh/campaignmesh/internal/platform/config"
)

// ConnectionAge is how long a client connection lives before the server sends GOAWAY, and how
// long calls in flight on it may then run (WithMaxConnectionAge); 0 is no limit for either.
type ConnectionAge struct {
	Max, Grace time.Duration
}

// DefaultConnectionAge is the documented default: DefaultMaxConnectionAge, unlimited grace.
var DefaultConnectionAge = ConnectionAge{Max: DefaultMaxConnectionAge, Grace: DefaultMaxConnectionAgeGrace}

// RegisterFlags defines -max-connection-age and -max-connection-age-grace.
func (c *ConnectionAge) RegisterFlags(fs *flag.FlagSet) {
	fs.DurationVar(&c.Max, "max-connection-age", c.Max, "a client connection older than this is asked (GOAWAY) to reconnect for new calls, so clients spread over the replicas behind a Service (0: never)")
	fs.DurationVar(&c.Grace, "max-connection-age-grace", c.Grace, "how long calls in flight on a connection past -max-connection-age may still run before it is closed (0: until they end)")
}

// Check records negative durations.
func (c ConnectionAge) Check(p *config.Problems) {
	p.Check(c.Max >= 0 && c.Grace >= 0, "-max-connection-age and -max-connection-age-grace must not be negative")
}

// Option is the server option of c.
func (c ConnectionAge) Option() Option { return WithMaxConnectionAge(c.Max, c.Grace) }
