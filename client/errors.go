package client

import (
	"errors"
	"fmt"

	"github.com/tandemhq/tandem/wire"
)

// Sentinel errors, checked with errors.Is. Errors from a server (Error
// frames, refusing acks) are *ServerError values that match the sentinel for
// their code.
var (
	// ErrClosed: the client was closed by the application.
	ErrClosed = errors.New("client: closed")
	// ErrDisconnected: the connection is gone (network error, server close,
	// Error frame, heartbeat timeout). Every error that ends a connection
	// wraps it together with the cause.
	ErrDisconnected = errors.New("client: disconnected")
	// ErrHeartbeatTimeout: the server was silent for two heartbeat intervals
	// (or the server closed us for being silent: CodeHeartbeat).
	ErrHeartbeatTimeout = errors.New("client: heartbeat timeout")
	// ErrNameInUse: another connection is logged on with this client name.
	ErrNameInUse = errors.New("client: client name in use")
	// ErrAuth: the server refused the credentials.
	ErrAuth = errors.New("client: authentication refused")
	// ErrVersion: no protocol version in common with the server.
	ErrVersion = errors.New("client: no common protocol version")
	// ErrBadPattern: a subscription topic pattern the server cannot compile.
	ErrBadPattern = errors.New("client: bad topic pattern")
	// ErrBadBookmark: a bookmark the server cannot resolve.
	ErrBadBookmark = errors.New("client: bad bookmark")
	// ErrNotPersisted: the server refused to store a message (or a flush
	// could not be honoured).
	ErrNotPersisted = errors.New("client: message not persisted")
	// ErrBadTopic: an empty topic, one longer than record.MaxTopic, or one
	// the server refuses.
	ErrBadTopic = errors.New("client: bad topic")
	// ErrTooLarge: a message that does not fit in one frame (WithMaxFrame).
	ErrTooLarge = errors.New("client: message too large")
	// ErrProtocol: the server sent something this client cannot decode.
	ErrProtocol = errors.New("client: protocol error")
	// ErrNotPermitted: the server refuses this user the operation (a
	// publish to, or subscription on, a topic; a stat).
	ErrNotPermitted = errors.New("client: not permitted")
	// ErrSequenceReused: the server holds this (name, pubSeq) with a
	// different topic or payload: two publishers share a name, or a store
	// was lost while the server kept the name's history.
	ErrSequenceReused = errors.New("client: publisher sequence reused")
	// ErrStandby: the server is a passive instance and sends clients
	// elsewhere (the HA client tries the next server at once).
	ErrStandby = errors.New("client: server is a standby")
)

// ServerError is an error code and text sent by the server, either in an
// Error frame (the connection then closes) or in an Ack refusing one thing
// (a publish, a subscription, a flush).
type ServerError struct {
	Code wire.Code
	Text string
}

func (e *ServerError) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("tandem server: %s (code %d)", e.Code, uint16(e.Code))
	}
	return fmt.Sprintf("tandem server: %s (code %d): %s", e.Code, uint16(e.Code), e.Text)
}

// Is maps the server's codes to this package's sentinels.
func (e *ServerError) Is(target error) bool {
	switch target {
	case ErrNameInUse:
		return e.Code == wire.CodeNameInUse
	case ErrAuth:
		return e.Code == wire.CodeAuth
	case ErrVersion:
		return e.Code == wire.CodeVersion
	case ErrBadPattern:
		return e.Code == wire.CodeBadPattern
	case ErrBadBookmark:
		return e.Code == wire.CodeBadBookmark
	case ErrHeartbeatTimeout:
		return e.Code == wire.CodeHeartbeat
	case ErrNotPersisted:
		return e.Code == wire.CodeStorageFailed || e.Code == wire.CodeShutdown
	case ErrNotPermitted:
		return e.Code == wire.CodeNotPermitted
	case ErrSequenceReused:
		return e.Code == wire.CodeSequenceReused
	case ErrStandby:
		return e.Code == wire.CodeStandby
	case ErrBadTopic:
		return e.Code == wire.CodeBadTopic
	case ErrTooLarge:
		return e.Code == wire.CodeTooLarge
	case ErrTLSRequired:
		return e.Code == wire.CodeTLSRequired
	case ErrLimit:
		return e.Code == wire.CodeLimit
	}
	return false
}

func serverError(code wire.Code, text []byte) *ServerError {
	return &ServerError{Code: code, Text: string(text)}
}

// disconnected wraps the cause of a connection's end so that it matches both
// ErrDisconnected and the cause.
func disconnected(cause error) error {
	if cause == nil || errors.Is(cause, ErrClosed) {
		return cause
	}
	return fmt.Errorf("%w: %w", ErrDisconnected, cause)
}
