package enqueuecmd

import (
	"fmt"
	"log/slog"

	"github.com/versori/activator/internal/logging"
)

// procLog is the log of one run of the command: set up once, when a subcommand has parsed its flags
// and opens Redis (openRedis), and stopped by Run, which writes the counts of repeated lines still
// held. Only `enqueue serve` logs lines of its own; the others' log is for go-redis's messages (a
// Redis that drops during `enqueue file`), which would otherwise be plain lines among the output.
type procLog struct {
	env     Env
	log     *slog.Logger
	stopLog func()
}

// start sets up the log in format, once, and returns it; later calls return the same log.
func (p *procLog) start(format string) (*slog.Logger, error) {
	if p.log != nil {
		return p.log, nil
	}
	f, err := logging.ParseFormat(format)
	if err != nil {
		return nil, usageError{fmt.Errorf("LOG_FORMAT=%v", err)}
	}
	p.log, p.stopLog = logging.New(p.env.Stderr, logging.Options{Format: f})
	if p.env.Install != nil {
		p.env.Install(p.log)
	}
	return p.log, nil
}

// stop writes what the log still holds.
func (p *procLog) stop() {
	if p != nil && p.stopLog != nil {
		p.stopLog()
	}
}
