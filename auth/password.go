package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Argon2id parameters of the hashes HashPassword makes: RFC 9106's second
// recommended option (64 MiB of memory, 3 passes, 4 lanes), a 16-byte
// random salt and a 32-byte key. A hash carries its own parameters, so
// Verify also accepts hashes made with others (within the bounds below).
const (
	DefaultMemoryKiB = 64 * 1024
	DefaultTime      = 3
	DefaultThreads   = 4
	saltLen          = 16
	keyLen           = 32

	// Bounds on the parameters a hash may ask for, so a users file cannot
	// make one verification take the machine's memory or minutes.
	maxMemoryKiB = 1 << 20 // 1 GiB
	maxTime      = 32
	maxThreads   = 64
)

// Params are argon2id cost parameters.
type Params struct {
	MemoryKiB uint32
	Time      uint32
	Threads   uint8
}

// DefaultParams are the parameters of HashPassword.
var DefaultParams = Params{MemoryKiB: DefaultMemoryKiB, Time: DefaultTime, Threads: DefaultThreads}

// ErrWrongPassword is returned by Verify for a password that does not match.
var ErrWrongPassword = errors.New("wrong password")

// ErrBadHash is wrapped by the errors of a hash string that does not parse.
var ErrBadHash = errors.New("bad password hash")

// HashPassword hashes password with argon2id and DefaultParams. The result
// is in the PHC string format:
//
//	$argon2id$v=19$m=65536,t=3,p=4$<salt, base64 raw std>$<key, base64 raw std>
func HashPassword(password []byte) (string, error) {
	return HashWith(password, DefaultParams)
}

// HashWith hashes password with the given parameters (tests use cheap ones).
func HashWith(password []byte, p Params) (string, error) {
	if err := p.check(); err != nil {
		return "", err
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey(password, salt, p.Time, p.MemoryKiB, p.Threads, keyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

func (p Params) check() error {
	switch {
	case p.Time < 1 || p.Time > maxTime:
		return fmt.Errorf("%w: t=%d (1..%d)", ErrBadHash, p.Time, maxTime)
	case p.Threads < 1 || p.Threads > maxThreads:
		return fmt.Errorf("%w: p=%d (1..%d)", ErrBadHash, p.Threads, maxThreads)
	case p.MemoryKiB < 8*uint32(p.Threads) || p.MemoryKiB > maxMemoryKiB:
		return fmt.Errorf("%w: m=%d KiB (8*p..%d)", ErrBadHash, p.MemoryKiB, maxMemoryKiB)
	}
	return nil
}

// Hash is a parsed argon2id hash.
type Hash struct {
	Params
	salt, key []byte
}

// ParseHash parses a PHC argon2id string as HashPassword prints it.
func ParseHash(s string) (*Hash, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" {
		return nil, fmt.Errorf("%w: want $argon2id$v=19$m=..,t=..,p=..$salt$key", ErrBadHash)
	}
	if parts[1] != "argon2id" {
		return nil, fmt.Errorf("%w: algorithm %q (only argon2id)", ErrBadHash, parts[1])
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version || parts[2] != fmt.Sprintf("v=%d", v) {
		return nil, fmt.Errorf("%w: version %q (want v=%d)", ErrBadHash, parts[2], argon2.Version)
	}
	var h Hash
	var threads uint32
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &h.MemoryKiB, &h.Time, &threads); err != nil ||
		parts[3] != fmt.Sprintf("m=%d,t=%d,p=%d", h.MemoryKiB, h.Time, threads) {
		return nil, fmt.Errorf("%w: parameters %q", ErrBadHash, parts[3])
	}
	if threads > maxThreads {
		return nil, fmt.Errorf("%w: p=%d (1..%d)", ErrBadHash, threads, maxThreads)
	}
	h.Threads = uint8(threads)
	if err := h.Params.check(); err != nil {
		return nil, err
	}
	var err error
	enc := base64.RawStdEncoding
	if h.salt, err = enc.DecodeString(parts[4]); err != nil || len(h.salt) < 8 {
		return nil, fmt.Errorf("%w: salt (at least 8 bytes of unpadded base64)", ErrBadHash)
	}
	if h.key, err = enc.DecodeString(parts[5]); err != nil || len(h.key) < 16 || len(h.key) > 64 {
		return nil, fmt.Errorf("%w: key (16..64 bytes of unpadded base64)", ErrBadHash)
	}
	return &h, nil
}

// Verify checks password against the hash in constant time (with respect
// to the key comparison). It costs one argon2id evaluation.
func (h *Hash) Verify(password []byte) error {
	key := argon2.IDKey(password, h.salt, h.Time, h.MemoryKiB, h.Threads, uint32(len(h.key)))
	if subtle.ConstantTimeCompare(key, h.key) != 1 {
		return ErrWrongPassword
	}
	return nil
}
