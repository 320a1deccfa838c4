package mtls

import "time"

// ReloadCheckInterval is reloadCheckInterval, for tests that step a clock past it.
const ReloadCheckInterval = reloadCheckInterval

// SetClock makes s read the time from now.
func SetClock(s *Source, now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}
