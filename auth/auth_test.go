package auth

import (
	"errors"
	"strings"
	"testing"
)

// cheap parameters: tests hash many passwords.
var testParams = Params{MemoryKiB: 64, Time: 1, Threads: 1}

func TestHashVerify(t *testing.T) {
	h, err := HashWith([]byte("s3cret"), testParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q", h)
	}
	ph, err := ParseHash(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := ph.Verify([]byte("s3cret")); err != nil {
		t.Fatalf("right password: %v", err)
	}
	if err := ph.Verify([]byte("s3cret\n")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	h2, _ := HashWith([]byte("s3cret"), testParams)
	if h2 == h {
		t.Fatal("two hashes of one password are equal: no salt")
	}
}

func TestDefaultParamsInHash(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB argon2id")
	}
	h, err := HashPassword([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=4$") {
		t.Fatalf("hash %q", h)
	}
}

func TestParseHashRejects(t *testing.T) {
	for _, s := range []string{
		"", "plain", "$argon2i$v=19$m=64,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=18$m=64,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=99999999,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=0,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=1,p=300$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=1,p=1$!!$AAAAAAAAAAAAAAAAAAAAAA",
		"$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAA$AA",
		"$argon2id$v=19$m=64,t=1,p=1,x=2$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA",
	} {
		if _, err := ParseHash(s); !errors.Is(err, ErrBadHash) {
			t.Errorf("ParseHash(%q) = %v, want ErrBadHash", s, err)
		}
	}
}

func testUsers(t *testing.T, extra string) *Users {
	t.Helper()
	h, err := HashWith([]byte("pw"), testParams)
	if err != nil {
		t.Fatal(err)
	}
	us, err := Parse([]byte(`
[[user]]
name = "al"
password = "` + h + `"
publish = ["orders", "md.*"]
subscribe = ["md.*", "fills"]

[[user]]
name = "al-ice"
password = "` + h + `"
subscribe = ["*"]
admin = true
` + extra))
	if err != nil {
		t.Fatal(err)
	}
	return us
}

func TestUsersPermissions(t *testing.T) {
	us := testUsers(t, "")
	al := us.Lookup("al")
	if al == nil || us.Len() != 2 {
		t.Fatal("users not loaded")
	}
	for topic, want := range map[string]bool{"orders": true, "orders2": false, "md.": true, "md.x": true, "md": false, "secret": false} {
		if got := al.Publish.Match([]byte(topic)); got != want {
			t.Errorf("al publish %q = %v, want %v", topic, got, want)
		}
	}
	if !al.Subscribe.Covers([]byte("md.eu")) || al.Subscribe.Covers([]byte("m")) || !al.Subscribe.Overlaps([]byte("m")) ||
		!al.Subscribe.Overlaps([]byte("fi")) || al.Subscribe.Overlaps([]byte("x")) || al.Subscribe.All() {
		t.Error("al's subscribe covers/overlaps")
	}
	if !us.Lookup("al-ice").Subscribe.All() || al.Admin || !us.Lookup("al-ice").Admin {
		t.Error("al-ice's permissions")
	}
}

func TestClientNameOwnership(t *testing.T) {
	us := testUsers(t, "")
	al, alice := us.Lookup("al"), us.Lookup("al-ice")
	for name, want := range map[string]*User{"al": al, "al-1": al, "al-ic": al, "al-ice": alice, "al-ice-pub": alice, "bob": nil, "alx": nil} {
		if got := us.Owner(name); got != want {
			t.Errorf("Owner(%q) = %v, want %v", name, got, want)
		}
	}
	if us.MayLogOnAs(al, "al-ice-pub") {
		t.Error("al may log on as one of al-ice's names")
	}
}

func TestAuthenticate(t *testing.T) {
	us := testUsers(t, "[[user]]\nname = \"certonly\"\n")
	if u, err := us.Authenticate("al", []byte("pw")); err != nil || u.Name != "al" {
		t.Fatalf("right password: %v %v", u, err)
	}
	if _, err := us.Authenticate("al", []byte("nope")); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := us.Authenticate("mallory", []byte("pw")); !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := us.Authenticate("certonly", []byte("")); !errors.Is(err, ErrNoPassword) {
		t.Fatalf("certificate-only user: %v", err)
	}
}

func TestParseUsersErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"[[user]]\nname = \"a\"\nsecret = 1\n", "unknown keys"},
		{"[[user]]\nname = \"\"\n", "name must be"},
		{"[[user]]\nname = \"a\"\n[[user]]\nname = \"a\"\n", "listed twice"},
		{"[[user]]\nname = \"a\"\npublish = [\"a*b\"]\n", "only at the end"},
		{"[[user]]\nname = \"a\"\npassword = \"plain\"\n", "bad password hash"},
		{"[[user]]\nname = \"a\"\nclient-names = []\n", "client-names is empty"},
		{"[[user]]\nname = \"a\"\nclient-names = [\"x*\"]\n[[user]]\nname = \"b\"\nclient-names = [\"x*\"]\n", "belongs to one user"},
		{"[[user]\n", "users file"},
	} {
		_, err := Parse([]byte(tc.text))
		if err == nil || !errors.Is(err, ErrUsersFile) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an ErrUsersFile saying %q", tc.text, err, tc.want)
		}
	}
}

func TestCredentials(t *testing.T) {
	u, p, ok := SplitCredentials(Credentials("al", []byte("p\x00w")))
	if !ok || u != "al" || string(p) != "p\x00w" {
		t.Fatalf("split: %q %q %v", u, p, ok)
	}
	if _, _, ok := SplitCredentials([]byte("token")); ok {
		t.Fatal("credentials without NUL split")
	}
}

// FuzzParseUsers: the parser never panics, and whatever it accepts is
// self-consistent (every user is found by name and owns its exact names).
func FuzzParseUsers(f *testing.F) {
	f.Add([]byte("[[user]]\nname = \"al\"\npublish = [\"a*\"]\nsubscribe = [\"*\"]\nadmin = true\n"))
	f.Add([]byte("[[user]]\nname = \"b\"\nclient-names = [\"b\", \"x-*\"]\npassword = \"$argon2id$v=19$m=64,t=1,p=1$AAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAA\"\n"))
	f.Add([]byte("[[user]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		us, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrUsersFile) {
				t.Fatalf("error %v does not wrap ErrUsersFile", err)
			}
			return
		}
		for _, u := range us.list {
			if us.Lookup(u.Name) != u {
				t.Fatalf("user %q not found by name", u.Name)
			}
			for _, p := range u.ClientNames {
				if !p.Prefix && us.Owner(p.Text) != u {
					t.Fatalf("exact client name %q of %q owned by %v", p.Text, u.Name, us.Owner(p.Text))
				}
			}
		}
	})
}
