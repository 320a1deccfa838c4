// Package writerfault injects faults into the analytics writer through its sink, for tests and
// the chaos build of cmd/analytics (main_chaos.go, built with -tags chaos) only: the normal
// binary does not link it, so no fault can be switched on in production.
package writerfault

import (
	"context"
	"errors"
	"sync"

	"github.com/campaignmesh/campaignmesh/services/analytics/writer"
)

// ErrCrashed is what Insert reports after the injected crash, when crash returned: the rows
// are stored, and the writer must not acknowledge them.
var ErrCrashed = errors.New("writerfault: crashed between insert and ack")

// CrashAfterInserts returns sink with a crash at the worst moment for the exactly-once
// argument: right after the n-th insert has been stored, before the writer acknowledges its
// messages. crash is called there. The chaos binary exits the process in it, as a kill -9
// would; a test cancels the writer's context, and Insert then returns ErrCrashed, so the
// writer stops without acknowledging. Later inserts pass through (a test may run a new writer
// on the same sink).
func CrashAfterInserts(sink writer.Sink, n int, crash func()) writer.Sink {
	return &crashAfter{Sink: sink, left: n, crash: crash}
}

type crashAfter struct {
	writer.Sink
	mu    sync.Mutex
	left  int
	crash func()
}

// Insert stores rows, then crashes if this was the n-th insert that succeeded.
func (c *crashAfter) Insert(ctx context.Context, month uint32, rows []writer.Row, commits []writer.Commit) error {
	if err := c.Sink.Insert(ctx, month, rows, commits); err != nil {
		return err
	}
	c.mu.Lock()
	c.left--
	now := c.left == 0
	c.mu.Unlock()
	if !now {
		return nil
	}
	c.crash()
	return ErrCrashed
}

// ErrAnswerLost is what Insert reports after LoseAnswers stored its rows.
var ErrAnswerLost = errors.New("writerfault: connection lost before the insert's answer")

// LoseAnswers returns sink whose first n inserts that succeed report ErrAnswerLost all the
// same: the rows are stored and the writer does not know it, as when a connection breaks after
// the server committed the insert. Inserts counts the Insert calls.
func LoseAnswers(sink writer.Sink, n int) *Lost {
	return &Lost{Sink: sink, left: n}
}

// Lost is the sink of LoseAnswers.
type Lost struct {
	writer.Sink
	mu           sync.Mutex
	left, called int
}

// Insert stores rows, then loses the answer while n answers are left to lose.
func (l *Lost) Insert(ctx context.Context, month uint32, rows []writer.Row, commits []writer.Commit) error {
	l.mu.Lock()
	l.called++
	l.mu.Unlock()
	if err := l.Sink.Insert(ctx, month, rows, commits); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.left > 0 {
		l.left--
		return ErrAnswerLost
	}
	return nil
}

// Inserts is how many times Insert was called.
func (l *Lost) Inserts() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.called
}
