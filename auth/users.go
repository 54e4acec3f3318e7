// Package auth holds Tandem's client-port access control: the users file
// (TOML), argon2id password hashes, topic and client-name patterns and the
// credentials a client sends at logon.
//
// # Users file
//
// A TOML document of [[user]] tables:
//
//	[[user]]
//	name = "alice"                    # 1..256 bytes of UTF-8, no NUL; unique
//	password = "$argon2id$v=19$..."   # from `tandem passwd`; optional (certificate-only user)
//	publish = ["orders", "md.*"]      # topic patterns the user may publish to
//	subscribe = ["*"]                 # topic patterns the user may read
//	admin = false                     # stat (and the admin endpoint)
//	client-names = ["alice", "alice-*"]  # the default: the name and NAME-*
//
// A pattern is an exact topic (or client name), a prefix ending in one `*`
// ("ord*"), or `*` alone (everything): the syntax of `tandem sub --topic`
// without regular expressions. A `*` anywhere but at the end is an error, as
// is any key not listed above.
//
// # Client names
//
// A client name is also a publisher identity (the server de-duplicates on
// it), so a name belongs to exactly one user: the user with the most
// specific client-names pattern matching it (the longest, an exact pattern
// before a prefix of the same text). Users "al" (default "al", "al-*") and
// "al-ice" ("al-ice", "al-ice-*") therefore own "al-x" and "al-ice-x"
// respectively, and "al" cannot log on as "al-ice-pub". Two users listing
// the same pattern is a load error.
//
// # Credentials
//
// The Logon frame's credentials field carries USER, one NUL byte, PASSWORD
// (Credentials builds it). With a verified client certificate (mTLS) the
// certificate's subject CN is the user and the credentials may be empty; if
// they name a user, it must be the CN.
package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// MaxName is the longest user name (and client name) accepted.
const MaxName = 256

// Pattern is a topic or client-name pattern: exact, or a prefix (Text
// without its trailing '*'; "*" is the empty prefix).
type Pattern struct {
	Text   string
	Prefix bool
}

// ParsePattern parses "exact", "prefix*" or "*".
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("empty pattern")
	}
	i := strings.IndexByte(s, '*')
	switch {
	case i < 0:
		return Pattern{Text: s}, nil
	case i == len(s)-1:
		return Pattern{Text: s[:i], Prefix: true}, nil
	}
	return Pattern{}, fmt.Errorf("pattern %q: '*' is allowed only at the end", s)
}

func (p Pattern) String() string {
	if p.Prefix {
		return p.Text + "*"
	}
	return p.Text
}

func (p Pattern) match(s []byte) bool {
	if p.Prefix {
		return len(s) >= len(p.Text) && string(s[:len(p.Text)]) == p.Text
	}
	return string(s) == p.Text
}

// Patterns is a list of patterns; a topic matches when any one does.
type Patterns []Pattern

// Match reports whether s matches one of the patterns. It does not allocate.
func (ps Patterns) Match(s []byte) bool {
	for _, p := range ps {
		if p.match(s) {
			return true
		}
	}
	return false
}

// All reports whether the patterns match everything ("*").
func (ps Patterns) All() bool {
	for _, p := range ps {
		if p.Prefix && p.Text == "" {
			return true
		}
	}
	return false
}

// Covers reports whether every topic starting with prefix matches.
func (ps Patterns) Covers(prefix []byte) bool {
	for _, p := range ps {
		if p.Prefix && bytes.HasPrefix(prefix, []byte(p.Text)) {
			return true
		}
	}
	return false
}

// Overlaps reports whether some topic starting with prefix matches.
func (ps Patterns) Overlaps(prefix []byte) bool {
	for _, p := range ps {
		t := []byte(p.Text)
		if bytes.HasPrefix(t, prefix) || p.Prefix && bytes.HasPrefix(prefix, t) {
			return true
		}
	}
	return false
}

func parsePatterns(list []string, what string) (Patterns, error) {
	ps := make(Patterns, 0, len(list))
	for _, s := range list {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// User is one [[user]] entry.
type User struct {
	Name        string
	Publish     Patterns
	Subscribe   Patterns
	Admin       bool
	ClientNames Patterns
	hash        *Hash // nil: no password (certificate-only)
}

// HasPassword reports whether the user may log on with a password.
func (u *User) HasPassword() bool { return u.hash != nil }

// Users is a parsed users file.
type Users struct {
	byName map[string]*User
	list   []*User
}

type fileUser struct {
	Name        string   `toml:"name"`
	Password    string   `toml:"password"`
	Publish     []string `toml:"publish"`
	Subscribe   []string `toml:"subscribe"`
	Admin       bool     `toml:"admin"`
	ClientNames []string `toml:"client-names"`
}

type file struct {
	User []fileUser `toml:"user"`
}

// ErrUsersFile is wrapped by every error of a users file that does not load.
var ErrUsersFile = errors.New("users file")

// Load reads and parses a users file.
func Load(path string) (*Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsersFile, err)
	}
	u, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return u, nil
}

// Parse parses the TOML text of a users file (see the package doc).
func Parse(data []byte) (*Users, error) {
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsersFile, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("%w: unknown keys %s (want name, password, publish, subscribe, admin, client-names in [[user]])",
			ErrUsersFile, strings.Join(keys, ", "))
	}
	us := &Users{byName: make(map[string]*User)}
	owners := map[Pattern]string{}
	for i, fu := range f.User {
		if fu.Name == "" || len(fu.Name) > MaxName || !utf8.ValidString(fu.Name) || strings.ContainsRune(fu.Name, 0) {
			return nil, fmt.Errorf("%w: user %d: name must be 1..%d bytes of UTF-8 without NUL", ErrUsersFile, i+1, MaxName)
		}
		if _, dup := us.byName[fu.Name]; dup {
			return nil, fmt.Errorf("%w: user %q is listed twice", ErrUsersFile, fu.Name)
		}
		u := &User{Name: fu.Name, Admin: fu.Admin}
		if fu.Password != "" {
			if u.hash, err = ParseHash(fu.Password); err != nil {
				return nil, fmt.Errorf("%w: user %q: password: %w", ErrUsersFile, fu.Name, err)
			}
		}
		if u.Publish, err = parsePatterns(fu.Publish, "publish"); err == nil {
			if u.Subscribe, err = parsePatterns(fu.Subscribe, "subscribe"); err == nil {
				names := fu.ClientNames
				if names == nil {
					names = []string{fu.Name, fu.Name + "-*"}
				} else if len(names) == 0 {
					err = errors.New("client-names is empty: the user could never log on (leave it out for the default)")
				}
				if err == nil {
					u.ClientNames, err = parsePatterns(names, "client-names")
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%w: user %q: %w", ErrUsersFile, fu.Name, err)
		}
		for _, p := range u.ClientNames {
			if other, ok := owners[p]; ok && other != u.Name {
				return nil, fmt.Errorf("%w: client-names pattern %q is listed by users %q and %q: a client name belongs to one user",
					ErrUsersFile, p, other, u.Name)
			}
			owners[p] = u.Name
		}
		us.byName[u.Name] = u
		us.list = append(us.list, u)
	}
	return us, nil
}

// Len is the number of users.
func (us *Users) Len() int { return len(us.list) }

// Lookup returns the named user, or nil.
func (us *Users) Lookup(name string) *User { return us.byName[name] }

// ErrUnknownUser and the others below are the reasons Authenticate refuses.
var (
	ErrUnknownUser = errors.New("unknown user")
	ErrNoPassword  = errors.New("user has no password (certificate logon only)")
)

// Authenticate checks a password logon. It costs one argon2id evaluation,
// for unknown users too (against a dummy hash), so the time taken does not
// tell which users exist. Callers must run it off the event loops.
func (us *Users) Authenticate(user string, password []byte) (*User, error) {
	u := us.byName[user]
	if u == nil || u.hash == nil {
		dummyHash.Verify(password)
		if u == nil {
			return nil, ErrUnknownUser
		}
		return nil, ErrNoPassword
	}
	if err := u.hash.Verify(password); err != nil {
		return nil, err
	}
	return u, nil
}

// dummyHash is verified for an unknown user, so the answer takes as long
// as for a known one.
var dummyHash = func() *Hash {
	h, err := ParseHash("$argon2id$v=19$m=65536,t=3,p=4$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	if err != nil {
		panic(err)
	}
	return h
}()

// Owner returns the user a client name belongs to (the most specific
// matching client-names pattern), or nil when no user's patterns match.
func (us *Users) Owner(clientName string) *User {
	var best *User
	bestRank := -1
	for _, u := range us.list {
		for _, p := range u.ClientNames {
			if !p.match([]byte(clientName)) {
				continue
			}
			rank := 2 * len(p.Text)
			if !p.Prefix {
				rank++
			}
			if rank > bestRank {
				best, bestRank = u, rank
			}
		}
	}
	return best
}

// MayLogOnAs reports whether u may use clientName: the name is u's.
func (us *Users) MayLogOnAs(u *User, clientName string) bool { return us.Owner(clientName) == u }

// Credentials builds the Logon credentials for a password logon:
// USER, NUL, PASSWORD.
func Credentials(user string, password []byte) []byte {
	b := make([]byte, 0, len(user)+1+len(password))
	b = append(b, user...)
	b = append(b, 0)
	return append(b, password...)
}

// SplitCredentials splits Logon credentials into user and password. ok is
// false when there is no NUL (not a password logon).
func SplitCredentials(cred []byte) (user string, password []byte, ok bool) {
	i := bytes.IndexByte(cred, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(cred[:i]), cred[i+1:], true
}
