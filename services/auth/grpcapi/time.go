package grpcapi

import "time"

// timeNow is the clock of the handlers (a variable so tests can pin it).
var timeNow = time.Now
