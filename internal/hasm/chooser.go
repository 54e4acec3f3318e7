package hasm

import (
	"fmt"
	"strings"
)

// Chooser tells the machine where to connect. Current is asked before
// every attempt; the outcome is reported with ReportSuccess, ReportFailure
// or ReportStandby. Current returning "" stops reconnection (ErrNoServer,
// with Error()). credentials says whether the attempt needs credentials
// from an authenticator (the driver asks for them; the machine only passes
// the flag on in ActDial).
type Chooser interface {
	Current() (uri string, credentials bool)
	ReportSuccess(uri string)
	// ReportFailure: an attempt or a connection failed. logonRefused is
	// true when the server refused the logon itself (credentials, protocol
	// version): retrying that server cannot help.
	ReportFailure(uri string, err error, logonRefused bool)
	// ReportStandby: the server answered that it is a standby.
	ReportStandby(uri string, err error)
	Error() string
}

// DefaultChooser is the client's DefaultServerChooser as a pure value: it
// rotates through URIs, stays on a server while it works and moves to the
// next one after a failure or a standby's answer. Current returns "" when
// the list is empty, when every server's last failure was a logon refusal,
// or after MaxFailures consecutive failures (0: never; a standby's answer
// is not a failure). Not safe for concurrent use.
type DefaultChooser struct {
	URIs        []string
	MaxFailures int
	Credentials bool // ActDial asks for credentials (an authenticator is set)

	cur      int
	failures int
	refused  []string // servers whose last failure was a logon refusal
	last     []lastErr
}

type lastErr struct{ uri, text string }

// NewDefaultChooser returns a chooser over uris (blank ones dropped), in
// order.
func NewDefaultChooser(uris ...string) *DefaultChooser {
	d := &DefaultChooser{}
	for _, u := range uris {
		if u = strings.TrimSpace(u); u != "" {
			d.URIs = append(d.URIs, u)
		}
	}
	return d
}

// Current implements Chooser.
func (d *DefaultChooser) Current() (string, bool) {
	if len(d.URIs) == 0 || d.allRefused() {
		return "", false
	}
	if d.MaxFailures > 0 && d.failures >= d.MaxFailures {
		return "", false
	}
	return d.URIs[d.cur%len(d.URIs)], d.Credentials
}

// allRefused: every listed server's last failure was a logon refusal.
func (d *DefaultChooser) allRefused() bool {
	return len(d.refused) == len(d.URIs)
}

// ReportSuccess implements Chooser.
func (d *DefaultChooser) ReportSuccess(string) {
	d.failures = 0
	d.refused = d.refused[:0]
	d.last = d.last[:0]
}

// ReportFailure implements Chooser: the next attempt goes to the next
// server in the list.
func (d *DefaultChooser) ReportFailure(uri string, err error, logonRefused bool) {
	d.failures++
	if err != nil {
		d.setLast(uri, err.Error())
	}
	if logonRefused {
		if !contains(d.refused, uri) {
			d.refused = append(d.refused, uri)
		}
	} else {
		d.refused = remove(d.refused, uri)
	}
	d.advance(uri)
}

// ReportStandby implements Chooser: the next attempt goes to the next
// server; neither a failure nor a refusal.
func (d *DefaultChooser) ReportStandby(uri string, err error) {
	if err != nil {
		d.setLast(uri, err.Error())
	}
	d.refused = remove(d.refused, uri)
	d.advance(uri)
}

func (d *DefaultChooser) advance(uri string) {
	if len(d.URIs) > 0 && d.URIs[d.cur%len(d.URIs)] == uri {
		d.cur = (d.cur + 1) % len(d.URIs)
	}
}

func (d *DefaultChooser) setLast(uri, text string) {
	for i := range d.last {
		if d.last[i].uri == uri {
			d.last[i].text = text
			return
		}
	}
	d.last = append(d.last, lastErr{uri, text})
}

// Error implements Chooser: why Current returned "" (and each server's
// last failure, in list order).
func (d *DefaultChooser) Error() string {
	if len(d.URIs) == 0 {
		return "the server list is empty"
	}
	var parts []string
	for _, u := range d.URIs {
		for _, l := range d.last {
			if l.uri == u {
				parts = append(parts, u+": "+l.text)
				break
			}
		}
	}
	detail := strings.Join(parts, "; ")
	switch {
	case d.allRefused():
		return "every server refused the logon: " + detail
	case d.MaxFailures > 0 && d.failures >= d.MaxFailures:
		return fmt.Sprintf("%d consecutive connection failures: %s", d.failures, detail)
	}
	return detail
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

func remove(s []string, x string) []string {
	for i, v := range s {
		if v == x {
			return append(s[:i], s[i+1:]...)
		}
	}
	return s
}
