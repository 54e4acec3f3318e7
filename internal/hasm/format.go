package hasm

import (
	"fmt"
	"strings"
	"time"

	"github.com/tandemhq/tandem/wire"
)

// String is a one-line, deterministic rendering of an action (the
// interaction scripts' traces; a simulator can hash it).
func (a Action) String() string {
	switch a.Kind {
	case ActDial:
		return fmt.Sprintf("dial conn=%d %s", a.Conn, a.URI)
	case ActTimer:
		return fmt.Sprintf("timer at=%s", time.Duration(a.At))
	case ActAttach:
		return fmt.Sprintf("attach conn=%d discard<=%d", a.Conn, a.Seq)
	case ActNextSeq:
		return fmt.Sprintf("next-seq conn=%d %d", a.Conn, a.Seq)
	case ActUp:
		return fmt.Sprintf("up conn=%d %s", a.Conn, a.URI)
	case ActDown:
		return fmt.Sprintf("down conn=%d", a.Conn)
	case ActClose:
		return fmt.Sprintf("close conn=%d", a.Conn)
	case ActStoreDiscard:
		return fmt.Sprintf("store-discard <=%d", a.Seq)
	case ActStoreRemove:
		return fmt.Sprintf("store-remove %d", a.Seq)
	case ActFailedWrite:
		return fmt.Sprintf("failed-write %d %v: %s", a.Seq, a.Code, a.Reason)
	case ActSubscribe:
		s := fmt.Sprintf("subscribe sub=%d %q conn=%d start=%v", a.Sub, a.SubName, a.Conn, a.Start)
		if a.Start == ModeResume {
			s += " " + entriesString(a.Resume)
		}
		if a.SetPosition {
			s += " set-position"
		}
		if a.Initial {
			s += " initial"
		}
		return s
	case ActSubEnded:
		return fmt.Sprintf("sub-ended sub=%d err=%v", a.Sub, a.Err)
	case ActEvent:
		e := a.Event
		s := fmt.Sprintf("event %v", e.State)
		if e.URI != "" {
			s += " " + e.URI
		}
		if e.Instance != "" {
			s += " instance=" + e.Instance
		}
		if e.From != "" {
			s += " from=" + e.From
		}
		if e.Err != nil {
			s += fmt.Sprintf(" err=%q", e.Err)
		}
		return s
	case ActError:
		return fmt.Sprintf("error %q", a.Err)
	case ActStopped:
		return fmt.Sprintf("stopped err=%q", a.Err)
	}
	return a.Kind.String()
}

// entriesString renders resume entries as [o<origin>:<floor> p<publisher>:<floor>].
func entriesString(e []wire.ResumeEntry) string {
	var parts []string
	for _, x := range e {
		k := "p"
		if x.Kind == wire.ResumeOrigin {
			k = "o"
		}
		parts = append(parts, fmt.Sprintf("%s%d:%d", k, x.ID, x.Seq))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// String is a one-line, deterministic rendering of an input.
func (in Input) String() string {
	s := fmt.Sprintf("%v t=%s", in.Kind, time.Duration(in.Now))
	if in.Conn != 0 {
		s += fmt.Sprintf(" conn=%d", in.Conn)
	}
	if in.Sub != 0 {
		s += fmt.Sprintf(" sub=%d", in.Sub)
	}
	if in.Seq != 0 {
		s += fmt.Sprintf(" seq=%d", in.Seq)
	}
	if in.Kind == InDialed {
		l := in.Logon
		s += fmt.Sprintf(" last=%d acked=%d max-frame=%d max-topic=%d instance=%q", l.LastPubSeq, l.AckedPubSeq, l.MaxFrame, l.MaxTopic, l.Instance)
	}
	if in.Code != 0 {
		s += fmt.Sprintf(" code=%v", in.Code)
	}
	if in.Cause != CauseOther {
		s += fmt.Sprintf(" cause=%d", in.Cause)
	}
	if in.Last {
		s += " last"
	}
	if in.Initial {
		s += " initial"
	}
	if in.Err != nil {
		s += fmt.Sprintf(" err=%q", in.Err)
	}
	return s
}
