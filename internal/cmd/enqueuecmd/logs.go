package enqueuecmd

import (
	"fmt"
	"log/slog"

	"github.com/versori/activator/internal/logging"
)

// procLog is the log of one run of the command: set up once, when a subcommand has parsed its flags
// and opens Redis (openRedis), and stopped by Run, which writes the counts of repeated lines still
// held. Only `enqueue serve`, which runs until stopped, logs: its own lines and go-redis's messages
// (start). The one-shot commands report a failure themselves, in the one line of a non-zero exit, so
// go-redis's chatter about the same failure (a refused dial, repeated) is discarded (quiet): on
// stderr it made three lines of one.
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
	f, err := parseLogFormat(format)
	if err != nil {
		return nil, err
	}
	p.log, p.stopLog = logging.New(p.env.Stderr, logging.Options{Format: f})
	p.install()
	return p.log, nil
}

// quiet sets up, once, a log that writes nothing, for a one-shot command; format is still checked,
// so that a bad LOG_FORMAT is refused by every command alike. A log already set up is kept.
func (p *procLog) quiet(format string) error {
	if p.log != nil {
		return nil
	}
	if _, err := parseLogFormat(format); err != nil {
		return err
	}
	p.log = slog.New(slog.DiscardHandler)
	p.install()
	return nil
}

func parseLogFormat(format string) (logging.Format, error) {
	f, err := logging.ParseFormat(format)
	if err != nil {
		return "", usageError{fmt.Errorf("LOG_FORMAT=%v", err)}
	}
	return f, nil
}

// install routes the libraries' loggers into the log.
func (p *procLog) install() {
	if p.env.Install != nil {
		p.env.Install(p.log)
	}
}

// stop writes what the log still holds.
func (p *procLog) stop() {
	if p != nil && p.stopLog != nil {
		p.stopLog()
	}
}
